"""HTTP routes of the image store (aiohttp): what the agent and ``bmaptool copy`` fetch.

- ``GET /images``: every image with its current version and versions (JSON);
- ``GET /images/{name}/{version}/index.json``: the index file as stored (its sha256 is the digest);
- ``GET /images/{name}/{version}/disk.bmap``: bmap 2.0 for bmaptool;
- ``GET /images/{name}/{version}/disk.img.zst``: the stored frames in disk order, each sent with
  ``loop.sendfile`` (zero copy) and hole frames written from memory, under one Content-Length;
- ``GET /chunks/{sha256}``: one stored frame (``web.FileResponse``, sendfile too).

``version`` is ``current``, a label or a digest prefix of 8+ hex. Names, versions and chunk ids are checked
against strict patterns before any path is built, so ``..`` or an encoded slash is refused (400). Errors are
the store's (``provision.images.errors``), answered as JSON ``{"error": ...}`` by ``provision.web.errors``:
400 bad request, 404 unknown, 500 corrupt store (a chunk of an existing version missing or bad included).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from provision.images import ImageStore, ImageVersion
from provision.web.errors import provision_errors
from provision.wire import paths

log = logging.getLogger(__name__)

IMAGE_STORE: web.AppKey[ImageStore] = web.AppKey("image_store", ImageStore)
ZSTD = "application/zstd"
IMMUTABLE = "public, max-age=31536000, immutable"


async def _version(request: web.Request) -> ImageVersion:
    ref = f"{request.match_info['name']}@{request.match_info['version']}"
    return await asyncio.to_thread(request.app[IMAGE_STORE].resolve, ref)


def _cache_headers(request: web.Request, version: ImageVersion) -> dict[str, str]:
    """A request by digest or label names immutable content; ``current`` may move."""
    immutable = request.match_info["version"] != "current"
    return {"ETag": f'"{version.digest}"', "Cache-Control": IMMUTABLE if immutable else "no-cache"}


async def list_images(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(request.app[IMAGE_STORE].list_images)
    return web.json_response([i.to_dict() for i in infos])


async def index_json(request: web.Request) -> web.FileResponse:
    version = await _version(request)
    path = request.app[IMAGE_STORE].index_path(version.name, version.digest)
    headers = _cache_headers(request, version)
    del headers["ETag"]  # FileResponse sets its own (mtime and size)
    return web.FileResponse(path, headers={"Content-Type": "application/json", **headers})


async def disk_bmap(request: web.Request) -> web.Response:
    version = await _version(request)
    text = await asyncio.to_thread(request.app[IMAGE_STORE].bmap_text, version)
    return web.Response(text=text, content_type="application/xml", headers=_cache_headers(request, version))


async def disk_zst(request: web.Request) -> web.StreamResponse:
    version = await _version(request)
    parts, total = await asyncio.to_thread(request.app[IMAGE_STORE].zst_parts, version)
    response = web.StreamResponse(headers={"Content-Type": ZSTD, **_cache_headers(request, version)})
    response.content_length = total
    await response.prepare(request)
    if request.method == "HEAD":
        await response.write_eof()
        return response
    started = time.monotonic()
    log.info("image %s: sending %s disk.img.zst (%d bytes) to %s", version.name, version.label, total, request.remote)
    loop = asyncio.get_running_loop()
    for part in parts:
        if isinstance(part, bytes):
            await response.write(part)
            continue
        path, size = part
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        with path.open("rb") as f:
            await loop.sendfile(transport, f, 0, size)
    await response.write_eof()
    log.info(
        "image %s: sent %s disk.img.zst to %s in %.1f s", version.name, version.label, request.remote,
        time.monotonic() - started,
    )  # fmt: skip
    return response


async def chunk(request: web.Request) -> web.FileResponse:
    path = request.app[IMAGE_STORE].chunk_file(request.match_info["sha256"])
    return web.FileResponse(path, headers={"Content-Type": ZSTD, "Cache-Control": IMMUTABLE})


def image_app(store: ImageStore, middlewares: Sequence[Middleware] = ()) -> web.Application:
    """An application serving only the image routes (tests, benchmarks), errors answered as the server does."""
    app = web.Application(middlewares=[provision_errors, *middlewares])
    add_image_routes(app, store)
    return app


def add_image_routes(app: web.Application, store: ImageStore) -> None:
    """Register the image routes on ``app`` (before it starts) and keep ``store`` in ``app[IMAGE_STORE]``."""
    app[IMAGE_STORE] = store
    app.router.add_get(paths.IMAGES, list_images)
    app.router.add_get(paths.IMAGE_INDEX, index_json)
    app.router.add_get(paths.IMAGE_BMAP, disk_bmap)
    app.router.add_get(paths.IMAGE_ZST, disk_zst)
    app.router.add_get(paths.CHUNK, chunk)
