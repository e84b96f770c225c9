"""Every URL the server serves and the agent, boot scripts or bmaptool fetch: the route templates the web app
registers and the functions that fill them, in one place.

Values put into a path are quoted (``/`` too), so a name can never reach another route; the server checks
names, versions and ids against strict patterns before it builds any file path from them.
"""

from __future__ import annotations

from urllib.parse import quote

# boot scripts and files
HEALTHZ = "/healthz"
METRICS = "/metrics"  # Prometheus (provision.metrics)
BOOT_SCRIPTS = "/boot/"  # every boot script is under this prefix
BOOT_IPXE = "/boot/{mac}.ipxe"
BOOT_GRUB_MAIN = "/boot/grub/grub.cfg"
BOOT_GRUB_HOST = "/boot/grub/hosts/{mac}.cfg"
FILES = "/files/"

# the agent API, version 1
HELLO = "/api/v1/hello"
FIRSTBOOT = "/api/v1/firstboot"
MACHINES = "/api/v1/machines"
MACHINE_EVENTS = "/api/v1/machines/{mac}/events"
RUNS = "/api/v1/runs"
RUN = "/api/v1/runs/{run}"
RUN_PROGRESS = "/api/v1/runs/{run}/progress"
RUN_REPORT = "/api/v1/runs/{run}/report"
RUN_ERASURE = "/api/v1/runs/{run}/erasure"  # every drive's erasure record (provision.wire.erasure)
RUN_ERASURE_PROGRESS = "/api/v1/runs/{run}/erasure/progress"
RUN_MULTICAST = "/api/v1/runs/{run}/multicast"  # join, keepalive, leave a carousel (provision.wire.carousel)
RUN_CAPTURE_OFFER = "/api/v1/runs/{run}/capture/offer"  # a capture's chunks, in order (provision.wire.capture)
RUN_CAPTURE_CHUNK = "/api/v1/runs/{run}/capture/chunks/{sha256}"  # PUT: one chunk the server asked for
RUN_CAPTURE_DONE = "/api/v1/runs/{run}/capture/done"  # the capture's end: the server publishes the version
OPENAPI = "/api/v1/openapi.json"  # the OpenAPI 3.1 document of the JSON API (provision.web.openapi)

# the image store
IMAGES = "/images"
IMAGE_INDEX = "/images/{name}/{version}/index.json"
IMAGE_BMAP = "/images/{name}/{version}/disk.bmap"
IMAGE_ZST = "/images/{name}/{version}/disk.img.zst"
CHUNK = "/chunks/{sha256}"


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` replaced by its value, quoted as one path segment (":" kept)."""
    return template.format(**{k: quote(v, safe=":") for k, v in values.items()})


def run_progress(run: str) -> str:
    return fill(RUN_PROGRESS, run=run)


def run_report(run: str) -> str:
    return fill(RUN_REPORT, run=run)


def run_erasure(run: str) -> str:
    return fill(RUN_ERASURE, run=run)


def run_erasure_progress(run: str) -> str:
    return fill(RUN_ERASURE_PROGRESS, run=run)


def run_multicast(run: str) -> str:
    return fill(RUN_MULTICAST, run=run)


def run_capture_offer(run: str) -> str:
    return fill(RUN_CAPTURE_OFFER, run=run)


def run_capture_chunk(run: str, sha256: str) -> str:
    return fill(RUN_CAPTURE_CHUNK, run=run, sha256=sha256)


def run_capture_done(run: str) -> str:
    return fill(RUN_CAPTURE_DONE, run=run)


def run(run: str) -> str:
    return fill(RUN, run=run)


def image_index(name: str, version: str) -> str:
    """The index file of a version (``version``: a digest, a label or ``current``)."""
    return fill(IMAGE_INDEX, name=name, version=version)


def chunk(sha256: str) -> str:
    """One stored chunk: a zstd frame of the plain bytes whose sha256 names it."""
    return fill(CHUNK, sha256=sha256)


def boot_ipxe(mac: str) -> str:
    return fill(BOOT_IPXE, mac=mac)
