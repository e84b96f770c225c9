"""HTTP routes of the image store (aiohttp): what the agent and ``bmaptool copy`` fetch.

- ``GET /images``: every image with its current version and versions (JSON);
- ``GET /images/{name}/{version}/index.json``: the index file as stored (its sha256 is the digest);
- ``GET /images/{name}/{version}/disk.bmap``: bmap 2.0 for bmaptool;
- ``GET /images/{name}/{version}/disk.img.zst``: the stored frames in disk order, each sent with
  ``loop.sendfile`` (zero copy) and hole frames written from memory, under one Content-Length;
- ``GET /chunks/{sha256}``: one stored frame (``loop.sendfile`` too). Byte ranges (``Range: bytes=A-B`` or
  ``bytes=A-``, up to 64 of them, ascending and apart: ``provision.wire.byteranges``) are answered 206 with
  those bytes of the frame, several as ``multipart/byteranges`` (the multicast agent's repair of a frame it got
  in part), 416 when one starts past the end; any other Range form gets the whole frame.

A stored frame is sent only from a descriptor opened without following a symlink and only once checked
(decoded, sha256 equal to its name), first time by a worker thread, then from the per-process record
(``provision.images.verified``). ``disk.img.zst`` checks every chunk of the version before its headers: a
bad one is a 500 before any byte. A chunk file that changes after the headers and is then found bad (or
another size) cuts the connection, so the client sees a short body and never a wrong one.

``version`` is ``current``, a label or a digest prefix of 8+ hex. Names, versions and chunk ids are checked
against strict patterns before any path is built, so ``..`` or an encoded slash is refused (400). Errors are
the store's (``provision.images.errors``), answered as JSON ``{"error": ...}`` by ``provision.web.errors``:
400 bad request, 404 unknown, 500 corrupt store (a chunk of an existing version missing or bad included).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from provision.images import ImageError, ImageStore, ImageVersion
from provision.images.verified import Frame
from provision.web.errors import provision_errors
from provision.wire import paths
from provision.wire.byteranges import (
    MULTIPART,
    BadRanges,
    Ranges,
    closing,
    content_range,
    multipart_length,
    parse_ranges,
    part_head,
)

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


async def index_json(request: web.Request) -> web.Response:
    version = await _version(request)
    data = await asyncio.to_thread(request.app[IMAGE_STORE].index_bytes, version.name, version.digest)
    return web.Response(body=data, content_type="application/json", headers=_cache_headers(request, version))


async def _sendfile(request: web.Request, frame: Frame, size: int, offset: int = 0) -> None:
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client went away")
    await asyncio.get_running_loop().sendfile(transport, frame.file(), offset, size)


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
    store = request.app[IMAGE_STORE]
    for part in parts:
        if isinstance(part, bytes):
            await response.write(part)
            continue
        try:  # the record knows the frame, unless its file changed since zst_parts: then check it again
            frame = store.open_part(version, part, check=False)
            with frame:
                if not frame.checked:
                    await asyncio.to_thread(store.frames.check, frame)
                await _sendfile(request, frame, part.size)
        except ImageError as exc:
            log.error("image %s: disk.img.zst to %s cut at chunk %d (offset %d, %s): %s", version.name,
                      request.remote, part.index, part.offset, part.sha256, exc)  # fmt: skip
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError(str(exc)) from None
    await response.write_eof()
    log.info(
        "image %s: sent %s disk.img.zst to %s in %.1f s", version.name, version.label, request.remote,
        time.monotonic() - started,
    )  # fmt: skip
    return response


async def chunk(request: web.Request) -> web.StreamResponse:
    store = request.app[IMAGE_STORE]
    sha256 = request.match_info["sha256"]
    with store.open_chunk(sha256) as frame:  # 400, 404, or 500 for a symlink or a frame recorded bad
        if not frame.checked:
            await asyncio.to_thread(store.frames.check, frame)  # 500 if bad: never sent
        headers = {"Content-Type": ZSTD, "Cache-Control": IMMUTABLE, "ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}
        try:
            wanted = parse_ranges(request.headers.get("Range"), frame.size)
        except BadRanges:
            raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{frame.size}"}) from None
        if wanted is not None and len(wanted) > 1:
            return await _parts(request, frame, wanted, headers)
        start, end = wanted[0] if wanted else (0, frame.size - 1)
        response = web.StreamResponse(status=206 if wanted else 200, headers=headers)
        if wanted:
            response.headers["Content-Range"] = content_range(start, end, frame.size)
        response.content_length = end - start + 1
        await response.prepare(request)
        if request.method != "HEAD":
            await _sendfile(request, frame, end - start + 1, start)
        await response.write_eof()
    return response


async def _parts(request: web.Request, frame: Frame, ranges: Ranges, headers: dict[str, str]) -> web.StreamResponse:
    """A 206 of several ranges: ``multipart/byteranges``, each part's bytes sent with sendfile."""
    boundary = secrets.token_hex(16)
    headers = {**headers, "Content-Type": f"{MULTIPART}; boundary={boundary}"}
    response = web.StreamResponse(status=206, headers=headers)
    response.content_length = multipart_length(ranges, boundary, frame.size, ZSTD)
    await response.prepare(request)
    if request.method != "HEAD":
        for i, (first, last) in enumerate(ranges):
            await response.write(part_head(boundary, first, last, frame.size, ZSTD, leading=i == 0))
            await _sendfile(request, frame, last - first + 1, first)
        await response.write(closing(boundary))
    await response.write_eof()
    return response


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
