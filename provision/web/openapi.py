"""The JSON API's one route table and the OpenAPI 3.1 document made from it (``GET /api/v1/openapi.json``).

Each route names its path (``provision.wire.paths``), its request message and answer (``provision.wire.api``),
or the record whose ``to_dict()`` it answers (``provision.store``, ``provision.images``), and the error classes
it may answer with (their ``status_code`` and ``public_facts`` make the error responses);
``provision.wire.openapi`` turns that into the document. What no class describes (an image's version summary,
the index file, ``/healthz``) is a documented shape here. tests/unit/test_openapi.py checks the table against
the routes ``make_app`` registers; tests/functional/test_openapi.py validates real answers against it.

Not in it: boot scripts (text for iPXE/GRUB), ``/files/`` and ``/repo/`` (static files), the dashboard's pages,
forms and its Server-Sent Events stream (``/dashboard/events``, ``text/event-stream``): docs/dashboard.md.
"""

from __future__ import annotations

import functools
import json
import typing
from typing import Any, Literal

from provision import __version__
from provision.capturing import UploadRefused
from provision.errors import NotFound, PayloadTooLarge, ProvisionError, RunConflict, RunError, TokenRefused
from provision.images import ImageError
from provision.images.errors import CorruptImage, ImageNotFound
from provision.images.partitions import PartitionTable
from provision.images.versions import ImageInfo
from provision.macaddr import BadMac
from provision.probes import ProbeNotKept, ProbeUnreadable
from provision.store.base import StoreUnavailable
from provision.store.captures import CaptureRun
from provision.store.records import ErasureRecord, Event, HookRecord, Machine, Run, Verification
from provision.wire import paths
from provision.wire.api import FirstBoot, Hello, HelloAnswer, Progress, ProgressAnswer, Report, RunAnswer, Screen
from provision.wire.capture import TOKEN_HEADER, CaptureDone, CaptureOffer, CaptureOfferAnswer, CaptureUploadAnswer
from provision.wire.carousel import MulticastAnswer, MulticastCall
from provision.wire.erasure import ErasureProgress, ErasureReport
from provision.wire.index import FORMAT_VERSION, SHA256
from provision.wire.openapi import ArrayOf, Inline, Param, Record, Route, document, json_schema

TITLE = "provision API"
DESCRIPTION = (
    "The JSON API of `provision serve`: the agent's calls (version 1), the machines, runs and events the "
    "dashboard shows, and the image store. Made from `provision.wire` (messages, paths) and the route table "
    "of `provision.web.openapi`; docs/api.md tells each call in words. Errors answer "
    '`{"error": reason, ...public facts}`.'
)
STORE = (StoreUnavailable,)
IMAGE_ERRORS: tuple[type[ProvisionError], ...] = (ImageError, ImageNotFound, CorruptImage)
DIGEST = {"type": "string", "pattern": f"^{SHA256.pattern}$"}
COUNT = {"type": "integer", "minimum": 0}

VERSION_SUMMARY = Inline(
    {
        "type": "object",
        "title": "VersionSummary",
        "description": "An image version without its chunk list (ImageVersion.summary, `provision image list`).",
        "properties": {
            "name": {"type": "string"},
            "digest": DIGEST,
            "label": {"type": "string"},
            "ref": {"type": "string", "description": "NAME@LABEL"},
            "created": {"type": "string"},
            "disk_size": COUNT,
            "sector_size": COUNT,
            "chunk_size": COUNT,
            "chunks": COUNT,
            "holes": COUNT,
            "mapped_bytes": COUNT,
            "partition_table": json_schema(typing.get_type_hints(PartitionTable)["label"], {}),
            "partitions": COUNT,
            "provenance": {"type": "object"},
        },
        "additionalProperties": False,
    },
    name="VersionSummary",
)
VERSION_SUMMARY.schema["required"] = list(VERSION_SUMMARY.schema["properties"])
INDEX_FILE = Inline(
    {
        "type": "object",
        "title": "ImageIndexFile",
        "description": "The index file of a version as stored: canonical JSON whose sha256 is the version's "
        "digest (provision.wire.index reads it).",
        "properties": {
            "format_version": {"const": FORMAT_VERSION},
            "name": {"type": "string", "minLength": 1},
            "created": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
            "disk_size": {"type": "integer", "minimum": 1},
            "sector_size": {"type": "integer", "minimum": 1},
            "chunk_size": {"type": "integer", "minimum": 1},
            "chunks": {
                "type": "array",
                "description": "in disk order; sha256 null: a hole (zeros, not stored)",
                "items": {
                    "type": "object",
                    "properties": {"sha256": {"anyOf": [DIGEST, {"type": "null"}]}, "length": COUNT},
                    "required": ["sha256", "length"],
                },
            },
            "layout": {"type": "object"},
            "provenance": {"type": "object"},
        },
    },
    name="ImageIndexFile",
)
INDEX_FILE.schema["required"] = list(INDEX_FILE.schema["properties"])  # every key (the reader needs each)
OK: Inline = Inline({"type": "object", "properties": {"ok": {"const": True}}, "required": ["ok"],
                     "additionalProperties": False})  # fmt: skip
HEALTH = Inline({"type": "object", "properties": {"ok": {"const": True}, "version": {"type": "string"}},
                 "required": ["ok", "version"], "additionalProperties": False})  # fmt: skip

HOOK_RESULT = Record(HookRecord, name="HookResult", extra={"ok": bool}, optional={"installed": dict[str, str]})
# the image's read-back record, named apart from the wire's Verification (a drive erasure's read-back)
VERIFICATION = Record(Verification, name="ImageVerification", extra={"complete": bool})
ERASURE = Record(ErasureRecord, name="Erasure")  # one drive's erasure record: every DriveErasure field
CAPTURED = Record(CaptureRun, name="CaptureFigures", extra={"positions": int | None})  # a capture run's figures
RUN = Record(Run, extra={"verifications": ArrayOf(VERIFICATION), "erasures": ArrayOf(ERASURE),
                         "hooks": ArrayOf(HOOK_RESULT), "kind": Literal["image", "erase", "capture"]},
             optional={"captured": CAPTURED})  # fmt: skip
RUN_SCREEN = Record(Run, name="RunWithScreen", extra=RUN.extra,
                    optional={**RUN.optional, "screen": Screen})  # GET ?screen=1  # fmt: skip
IMAGE = Record(ImageInfo, name="Image", fields={"current": VERSION_SUMMARY, "versions": ArrayOf(VERSION_SUMMARY)})
MAC = {"mac": "a MAC address (any usual spelling: 52:54:00:12:34:56, 52-54-00-12-34-56, 525400123456)"}
RUN_ID = {"run": "the run's id"}
VERSION = {"name": "the image's name", "version": "`current`, a label, or a digest (8 hex digits or more)"}

ROUTES: tuple[Route, ...] = (
    Route("POST", paths.HELLO, "hello", "The live environment's first call", HelloAnswer, Hello, tag="agent",
          errors=(TokenRefused, RunConflict, ProbeUnreadable, ImageError, ProbeNotKept, *STORE),
          description="Who the PC is (MAC + per-boot token), how it booted, its probe; the answer says what to do."),
    Route("POST", paths.RUN_PROGRESS, "run_progress", "A run's stage and progress", ProgressAnswer, Progress,
          tag="agent", params=RUN_ID, errors=(TokenRefused, NotFound, RunConflict, *STORE)),
    Route("POST", paths.RUN_REPORT, "run_report", "The end of a run: verified, or failed with a reason", RunAnswer,
          Report, tag="agent", params=RUN_ID, errors=(TokenRefused, NotFound, RunConflict, RunError, *STORE)),
    Route("POST", paths.RUN_ERASURE, "run_erasure", "Every drive's erasure: the run goes on, ends done or repair",
          RunAnswer, ErasureReport, tag="agent", params=RUN_ID,
          errors=(TokenRefused, NotFound, RunConflict, RunError, *STORE),
          description="Recorded once per run; every drive ok: `writing` (an image follows) or `done` (erase-only); "
                      "a drive not ok or none at all: `repair` with the reason in plain words."),
    Route("POST", paths.RUN_ERASURE_PROGRESS, "run_erasure_progress", "Each drive's erasure progress",
          ProgressAnswer, ErasureProgress, tag="agent", params=RUN_ID,
          errors=(TokenRefused, NotFound, RunConflict, *STORE)),
    Route("POST", paths.RUN_MULTICAST, "run_multicast", "Join, keepalive or leave the run's multicast carousel",
          MulticastAnswer, MulticastCall, tag="agent", params=RUN_ID,
          errors=(TokenRefused, NotFound, RunConflict, *STORE),
          description="Only for a run whose plan has `multicast` (else 409). The carousel of the plan's version "
                      "sends while one of its agents is joined and alive; a listener not heard from for 3 "
                      "keepalive periods is dropped (docs/multicast.md)."),
    Route("POST", paths.RUN_CAPTURE_OFFER, "run_capture_offer", "Chunks of a capture's disk: which to upload",
          CaptureOfferAnswer, CaptureOffer, tag="agent", params=RUN_ID,
          errors=(TokenRefused, NotFound, RunConflict, *STORE),
          description="Positions in disk order, no gap (the same offer again is accepted; another one for the "
                      "same positions is 409); the answer names the sha256s the server lacks, each once per run "
                      "(docs/capture.md)."),
    Route("PUT", paths.RUN_CAPTURE_CHUNK, "run_capture_chunk", "One chunk of a capture, as one zstd frame",
          CaptureUploadAnswer, tag="agent", raw_request="application/zstd",
          params={**RUN_ID, "sha256": "the plain chunk's sha256 (one the offer's answer named)"},
          headers={TOKEN_HEADER: "the run's boot token"},
          errors=(TokenRefused, NotFound, RunConflict, PayloadTooLarge, UploadRefused, *STORE),
          description="At most the chunk size plus zstd's worst case (413 beyond); a frame that does not decode "
                      "or bytes that do not hash to the sha256 are 422 and nothing is stored."),
    Route("POST", paths.RUN_CAPTURE_DONE, "run_capture_done", "The end of a capture: the version published",
          RunAnswer, CaptureDone, tag="agent", params=RUN_ID,
          errors=(TokenRefused, NotFound, RunConflict, RunError, *STORE),
          description="Every position offered and every chunk stored: the server reads the disk back, checks its "
                      "sha256, writes the index with its provenance and publishes it; the run ends `done` (its "
                      "label and digest name the version) or `failed` with the reason, nothing published."),
    Route("POST", paths.FIRSTBOOT, "firstboot", "An installed system's boot, proven by its run's secret", OK,
          FirstBoot, tag="agent", errors=(TokenRefused, NotFound, *STORE)),
    Route("GET", paths.MACHINES, "machines", "Every machine the server knows", ArrayOf(Record(Machine)),
          tag="records", errors=STORE),
    Route("GET", paths.MACHINE_EVENTS, "machine_events", "A machine's events, oldest first (the first 1000)",
          ArrayOf(Record(Event, omit=("mac",))), tag="records", params=MAC, errors=(BadMac, *STORE)),
    Route("GET", paths.RUNS, "runs", "Runs, oldest first, with their verifications and hook results",
          ArrayOf(RUN), tag="records", errors=(BadMac, *STORE),
          query=(Param("mac", "only this machine's runs"),)),
    Route("GET", paths.RUN, "run", "One run", RUN_SCREEN, tag="records", params=RUN_ID, errors=(NotFound, *STORE),
          query=(Param("screen", "`1`: with the machine's screen (an agent waiting for its hooks)"),)),
    Route("GET", paths.IMAGES, "images", "Every image: its current version and all versions",
          ArrayOf(IMAGE), tag="images", errors=IMAGE_ERRORS),
    Route("GET", paths.IMAGE_INDEX, "image_index", "A version's index file (its sha256 is the digest)",
          INDEX_FILE, tag="images", params=VERSION, errors=IMAGE_ERRORS),
    Route("GET", paths.IMAGE_BMAP, "image_bmap", "A version's bmap (2.0) for bmaptool", "application/xml",
          tag="images", params=VERSION, errors=IMAGE_ERRORS),
    Route("GET", paths.IMAGE_ZST, "image_zst", "A version's whole disk as one zstd stream", "application/zstd",
          tag="images", params=VERSION, errors=IMAGE_ERRORS),
    Route("GET", paths.CHUNK, "chunk", "One stored chunk: a zstd frame of the bytes whose sha256 names it",
          "application/zstd", tag="images", params={"sha256": "the plain chunk's sha256"}, errors=IMAGE_ERRORS),
    Route("GET", paths.HEALTHZ, "healthz", "The server is up", HEALTH, tag="server"),
    Route("GET", paths.METRICS, "metrics", "Prometheus figures read from the store (docs/service.md)",
          "text/plain", tag="server", errors=STORE),
    Route("GET", paths.OPENAPI, "openapi", "This document", Inline({"type": "object"}), tag="server"),
)  # fmt: skip


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document of ``ROUTES`` (made once per process)."""
    return document(ROUTES, title=TITLE, version=__version__, description=DESCRIPTION)


@functools.cache
def openapi_bytes() -> bytes:
    """The document as served: JSON, UTF-8, made once per process."""
    return json.dumps(openapi_document(), ensure_ascii=False, indent=1).encode()
