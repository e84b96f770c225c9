"""What the agent's hello tells about the machine besides its inventory: the firmware and Secure Boot state
(``boot_info``), the live environment's SSH host key (``ssh_host_key``) and a probe folder's files
(``read_probe_folder``, within the API's limits); the agent's own arguments from the kernel command line
(``args_from_kernel``, ``missing``)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from provision.agent.inventory import Runner, read_kernel_args
from provision.wire.api import HOST_KEY, PROBE_NAME, BootInfo

log = logging.getLogger(__name__)

MAX_PROBE_FILE = 2 << 20  # bytes of one probe file sent; the API takes 4 MiB per call
MAX_PROBE_TOTAL = 3 << 20
SECURE_BOOT_VAR = "efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


def boot_info(sys_root: Path = Path("/sys")) -> BootInfo:
    """Firmware kind and Secure Boot state (from the SecureBoot EFI variable), and the running kernel."""
    uefi = (sys_root / "firmware" / "efi").is_dir()
    secure: bool | None = None
    if uefi:
        try:
            data = (sys_root / "firmware" / SECURE_BOOT_VAR).read_bytes()
            secure = len(data) >= 5 and data[4] == 1  # 4 attribute bytes, then the value
        except OSError:
            secure = None
    return BootInfo("uefi" if uefi else "bios", secure, os.uname().release[:200])


def ssh_host_key(key_file: Path | None, run: Runner) -> str | None:
    """The live environment's SSH host key as one public key line (dropbearkey -y), or None (no key file, no
    dropbear: the server then cannot run this PC's hooks, and says so)."""
    if key_file is None or not key_file.is_file():
        return None
    try:
        done = run(["dropbearkey", "-y", "-f", str(key_file)], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("ssh host key not read from %s: %s", key_file, exc)
        return None
    out = bytes(done.stdout or b"").decode("utf-8", "replace")
    lines = [line for line in out.splitlines() if re.fullmatch(HOST_KEY, line)]
    return lines[0] if lines else None


def read_probe_folder(folder: Path) -> tuple[dict[str, str], list[str]]:
    """The probe files as text for the hello; files too large for the API are left out with a warning."""
    files: dict[str, str] = {}
    warnings: list[str] = []
    total = 0
    sized: list[tuple[int, Path]] = []
    for path in folder.iterdir():
        try:
            if path.is_file():
                sized.append((path.stat().st_size, path))
        except OSError as exc:
            warnings.append(f"{path.name}: not readable ({exc.strerror or exc})")
    for size, path in sorted(sized):
        if not PROBE_NAME.fullmatch(path.name):
            warnings.append(f"{path.name!r}: a name the server refuses, not sent")
        elif size > MAX_PROBE_FILE or total + size > MAX_PROBE_TOTAL:
            warnings.append(f"{path.name}: {size} bytes, not sent (limit {MAX_PROBE_FILE} per file)")
        else:
            try:
                files[path.name] = path.read_bytes().decode("utf-8", errors="replace")
                total += size
            except OSError as exc:
                warnings.append(f"{path.name}: not readable ({exc.strerror or exc})")
    return files, warnings


def args_from_kernel(cmdline: str, explicit: Mapping[str, str | None]) -> dict[str, str]:
    """``server``, ``mac``, ``token``: explicit values first, else ``provision.*=`` kernel arguments."""
    found = read_kernel_args(cmdline)
    return {k: v for k in ("server", "mac", "token") if (v := explicit.get(k) or found.get(k))}


def missing(values: Mapping[str, str], names: Sequence[str] = ("server", "mac", "token")) -> list[str]:
    return [n for n in names if not values.get(n)]
