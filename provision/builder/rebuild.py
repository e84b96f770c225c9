"""``rebuild_all``: the nightly job. Rebuild each definition whose inputs changed, publish it, say what changed.

For every ``images/*.yaml``: validate, resolve the inputs (apt's package versions with fresh lists, the
definition file's hash, the overlays, the boot loader packages), and compare their digest with the
``inputs`` recorded in the provenance of the image's ``current`` version. Equal: skipped. Different (or
no current version): built and published, and the result lists the packages added, removed and upgraded
against the previous version and how many chunks were new. One image failing does not stop the others.

A rebuild updates the current version's disk in place when its layout allows (``mode.decide``; ``fresh``
lays every image out anew); each result says which mode and why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from provision.bootfiles import DebCache
from provision.builder.build import DEFAULT_LOG_DIR, DEFAULT_WORKDIR, build_image
from provision.builder.definition import definition_files, load_definition
from provision.builder.inputs import Inputs, resolve_inputs
from provision.builder.progress import ChunkStats, ProgressCallback
from provision.builder.resolve import PackageChanges, package_changes
from provision.builder.runner import Runner
from provision.errors import ConfigError, ProvisionError
from provision.images.index import ImageVersion
from provision.images.store import ImageStore

log = logging.getLogger(__name__)

NIGHTLY_LISTS_MAX_AGE = 3600.0  # the nightly run sees last hour's archive, not yesterday's

Status = Literal["built", "skipped", "failed"]


@dataclass(frozen=True)
class RebuildResult:
    """What the nightly run did with one definition."""

    name: str
    definition: Path
    status: Status
    reason: str  # why built or skipped, or the error message
    inputs_digest: str | None = None
    previous: str | None = None  # ref of current before the run
    version: str | None = None  # ref of the new version (built)
    changes: PackageChanges | None = None  # against the previous version's packages
    chunks: ChunkStats | None = None
    seconds: float = 0.0
    log: Path | None = None
    error: dict[str, Any] = field(default_factory=dict)  # the error's facts (failed)
    mode: str | None = None  # built: "in_place" or "fresh"
    mode_reason: str = ""  # built: why that mode (one sentence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": str(self.definition),
            "status": self.status,
            "reason": self.reason,
            "inputs": self.inputs_digest,
            "previous": self.previous,
            "version": self.version,
            "changes": None if self.changes is None else self.changes.to_dict(),
            "chunks": None if self.chunks is None else self.chunks.to_dict(),
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "seconds": round(self.seconds, 1),
            "log": None if self.log is None else str(self.log),
            "error": {
                k: v if isinstance(v, str | int | float | bool | None) else str(v) for k, v in self.error.items()
            },
        }


def what_changed(previous: ImageVersion | None, inputs: Inputs) -> list[str]:
    """Which inputs differ from those recorded in ``previous``'s provenance (empty: nothing)."""
    if previous is None:
        return ["no current version"]
    prov = previous.index.provenance
    if prov.get("inputs") == inputs.digest:
        return []
    old = prov.get("inputs_summary")
    if not isinstance(old, dict):
        return ["not built by the image builder"]
    new = inputs.summary()
    names = {
        "definition_sha256": "definition",
        "overlays_sha256": "overlays",
        "boot": "boot loaders",
        "builder_version": "builder",
        "builder_scripts_sha256": "builder scripts",
        "suite": "suite",
        "archive": "archive",
    }
    changed = [label for key, label in names.items() if old.get(key) != new.get(key)]
    if prov.get("resolved") != inputs.packages:
        changed.append("packages")
    return changed or ["inputs"]


def _previous_packages(previous: ImageVersion | None) -> dict[str, str]:
    packages = previous.index.provenance.get("packages") if previous is not None else None
    return {str(k): str(v) for k, v in packages.items()} if isinstance(packages, dict) else {}


def _failed(name: str, path: Path, exc: ProvisionError, started: float, previous: ImageVersion | None) -> RebuildResult:
    facts = dict(exc.facts)
    facts.pop("problems", None)
    log_path = facts.get("log")
    return RebuildResult(
        name=name,
        definition=path,
        status="failed",
        reason=str(exc),
        previous=None if previous is None else previous.ref,
        seconds=time.monotonic() - started,
        log=Path(log_path) if isinstance(log_path, str) and log_path else None,
        error=facts,
    )


def rebuild_one(
    path: Path,
    store: ImageStore,
    cache: DebCache,
    *,
    force: bool = False,
    fresh: bool = False,
    workdir: Path = DEFAULT_WORKDIR,
    log_dir: Path = DEFAULT_LOG_DIR,
    progress: ProgressCallback | None = None,
    runner_factory: Callable[[], Runner] = Runner,
) -> RebuildResult:
    """Rebuild one definition if its inputs changed (or ``force``); ``fresh``: lay its disk out anew."""
    started = time.monotonic()
    name = path.stem
    previous: ImageVersion | None = None
    try:
        loaded = load_definition(path)
        name = loaded.name
        previous = store.current(name)
        inputs = resolve_inputs(loaded, cache)
        changed = what_changed(previous, inputs)
        if not changed and not force:
            log.info("image %s: inputs unchanged (%s), skipped", name, inputs.digest[:12])
            return RebuildResult(
                name=name,
                definition=path,
                status="skipped",
                reason="inputs unchanged",
                inputs_digest=inputs.digest,
                previous=None if previous is None else previous.ref,
                version=None if previous is None else previous.ref,
                seconds=time.monotonic() - started,
            )
        reason = "forced" if not changed else "changed: " + ", ".join(changed)
        log.info("image %s: %s: building", name, reason)
        result = build_image(
            loaded,
            store,
            cache=cache,
            inputs=inputs,
            workdir=workdir,
            log_dir=log_dir,
            progress=progress,
            runner=runner_factory(),
            fresh=fresh,
        )
    except ConfigError as exc:
        return _failed(name, path, exc, started, previous)
    except ProvisionError as exc:
        log.error("image %s: rebuild failed: %s", name, exc)
        return _failed(name, path, exc, started, previous)
    return RebuildResult(
        name=name,
        definition=path,
        status="built",
        reason=reason,
        inputs_digest=inputs.digest,
        previous=None if previous is None else previous.ref,
        version=result.version.ref,
        changes=package_changes(_previous_packages(previous), result.packages),
        chunks=result.chunks,
        seconds=time.monotonic() - started,
        log=result.log,
        mode=result.mode,
        mode_reason=result.mode_reason,
    )


def rebuild_all(
    images_dir: Path,
    store: ImageStore,
    *,
    cache: DebCache | None = None,
    names: Sequence[str] | None = None,
    force: bool = False,
    fresh: bool = False,
    workdir: Path = DEFAULT_WORKDIR,
    log_dir: Path = DEFAULT_LOG_DIR,
    progress: ProgressCallback | None = None,
    runner_factory: Callable[[], Runner] = Runner,
) -> list[RebuildResult]:
    """Rebuild every definition of ``images_dir`` (or those of ``names``, by file stem or image name)
    whose inputs changed; publish each; one result per definition, in file name order. ``fresh``: every
    image built is laid out anew instead of updated in place."""
    cache = cache or DebCache(lists_max_age=NIGHTLY_LISTS_MAX_AGE)
    results = []
    for path in definition_files(images_dir):
        if names is not None and path.stem not in names and not _defines(path, names):
            continue
        results.append(
            rebuild_one(
                path,
                store,
                cache,
                force=force,
                fresh=fresh,
                workdir=workdir,
                log_dir=log_dir,
                progress=progress,
                runner_factory=runner_factory,
            )
        )
    built = sum(1 for r in results if r.status == "built")
    failed = sum(1 for r in results if r.status == "failed")
    in_place = sum(1 for r in results if r.mode == "in_place")
    log.info(
        "rebuild: %d definitions, %d built (%d in place), %d skipped, %d failed",
        len(results),
        built,
        in_place,
        len(results) - built - failed,
        failed,
    )
    return results


def _defines(path: Path, names: Sequence[str]) -> bool:
    try:
        return load_definition(path).name in names
    except ConfigError:
        return False
