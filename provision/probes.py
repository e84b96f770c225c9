"""The raw probe of each machine (the files its live environment collected), kept under
``probes_dir/<mac>/`` (the previous one replaced atomically: the workshop keeps every PC's last hardware dump)
and read into facts (``provision.facts.load_probe``). Used by ``provision.runs`` at hello.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from provision.errors import FatalError, ProbeError, ProvisionError
from provision.facts import Facts, load_probe

log = logging.getLogger(__name__)


class ProbeUnreadable(FatalError):
    """The hello's probe or facts cannot be read into facts (HTTP 422)."""

    status_code = 422


class ProbeNotKept(ProvisionError):
    """The server could not write the probe folder (a full or read-only state directory)."""


def keep_probe(probes_dir: Path | None, mac: str, files: dict[str, str]) -> Facts:
    """Keep the raw probe of ``mac`` under ``probes_dir/<mac>/``, replacing the previous one, and read its
    facts. File names are checked by the wire contract. ProbeUnreadable (422) or ProbeNotKept (the folder
    cannot be written, 500)."""
    if probes_dir is None:
        raise ProbeUnreadable(f"probe not readable: {mac}: this server keeps no probes (no probes_dir)", mac=mac)
    folder = probes_dir / mac.replace(":", "-")
    fresh = folder.with_name(folder.name + ".new")
    old = folder.with_name(folder.name + ".old")
    try:
        if fresh.exists():
            shutil.rmtree(fresh)
        fresh.mkdir(parents=True)
        for name, text in files.items():
            (fresh / name).write_text(text, encoding="utf-8", errors="replace")
        facts = load_probe(fresh)
        if old.exists():
            shutil.rmtree(old)
        if folder.exists():
            folder.rename(old)
        fresh.rename(folder)
        if old.exists():
            shutil.rmtree(old)
    except ProbeError as exc:
        log.error("%s: probe not kept: %s", mac, exc)
        raise ProbeUnreadable(f"probe not readable: {str(exc)[:300]}", mac=mac) from None
    except OSError as exc:
        log.error("%s: probe not kept: %s", mac, exc)
        raise ProbeNotKept(f"probe not readable: {str(exc)[:300]}", mac=mac) from None
    return facts
