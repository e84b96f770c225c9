"""Post-install hooks for tests: hook files, tiny root trees to run them in, hostile values.

- ``hook_text(name, header, body)``, ``write_hook(folder, name, header, body, mode)``: a hook file whose header
  is the YAML ``header`` (a string) in comment lines, after ``#!/bin/sh``.
- ``HOSTILE``: values a template could render from a machine's facts (shell syntax, quotes, line breaks), for
  hooks run in a chroot in their own PID, UTS, IPC and mount namespaces (``run_target``), where even
  ``reboot`` or ``rm -rf /`` could only end the namespace or empty the tiny root; ``MARKERS``: the same kinds
  for hooks run here, which would only leave a file ``pwned`` in the working folder.
- ``BUSYBOX``: busybox-static from the .deb cache (tests/support/paths.DEB_CACHE), or None; ``needs_busybox``
  skips a test without it (or without root, which chroot needs).
- ``tiny_root(folder, files, shell)``: a root tree with busybox and its applets linked (bin/sh ...), /tmp,
  /dev/null, zero and urandom, and ``files`` (relative path -> text or bytes); /bin/sh is busybox's, or this
  machine's dash (``shell="dash"``).
- ``applets_dir(folder)``: a folder of busybox applet links, to put first on PATH (a `live` hook run here).
- ``copy_program(root, program)``: a program of this machine and the libraries it links into a root tree.
- ``run_target(root, hook, env)``: the hook file copied into the root and run in a chroot of it (in new PID,
  UTS, IPC and mount namespaces), with ``env`` only (and a PATH), as the runner does.
- ``run_direct(hook, env, cwd, stdin, path, shell)``: a hook run here.
- ``builtin(name)``, ``builtin_env(name, params, **facts)``: a built-in hook and the environment
  provision.hooks.env makes for it (MAC ``MAC``, run ``run-1``); ``run_builtin(root, name, **params)``: it run
  with ``run_target``; ``intact(root)``: no ``pwned`` marker, busybox still there.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from provision.facts.derive import FACT_NAMES, FactValue
from provision.hooks import HookFile, builtin_dir, hook_env, load_catalog
from tests.support.files import write_tree
from tests.support.paths import DEB_CACHE

HOSTILE = (
    "; rm -rf / #",
    "$(reboot)",
    "`reboot`",
    "$(touch /pwned)",
    'it\'s "quoted" \\ back',
    "line one\nline two",
    "${IFS}$PATH*?[a]",
    "-rf --no-preserve-root",
)
# For a hook run outside a chroot: were one executed, it would only leave a file "pwned" in the working folder.
MARKERS = ("; touch pwned #", "$(touch pwned)", "`touch pwned`", "a'b\"c\\d", "one\ntwo", "${IFS}*?[a]", "-x --y")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _busybox() -> Path | None:
    for unpacked in sorted(DEB_CACHE.glob("busybox-static_*/.provision-unpacked")):
        binary = unpacked.parent / "bin" / "busybox"
        if binary.is_file():
            return binary
    return None


BUSYBOX = _busybox()
needs_busybox = pytest.mark.skipif(
    BUSYBOX is None or os.geteuid() != 0,
    reason=f"needs root (chroot) and busybox-static unpacked in {DEB_CACHE} (scripts/setup, or any image build)",
)


def hook_text(name: str, header: str, body: str = "exit 0\n", shebang: str = "#!/bin/sh") -> str:
    lines = [f"# {line}" if line else "#" for line in header.strip("\n").splitlines()]
    return "\n".join([shebang, "# --- provision hook", f"# name: {name}", *lines, "# ---", body])


def write_hook(folder: Path, name: str, header: str, body: str = "exit 0\n", mode: int = 0o755) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(hook_text(name, header, body))
    path.chmod(mode)
    return path


def _link_applets(busybox: Path, root: Path, into: str | None = None) -> None:
    listed = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    for applet in listed.split():
        link = root / (into or str(Path(applet).parent)) / Path(applet).name
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox" if into is None else busybox)


def tiny_root(folder: Path, files: Mapping[str, str | bytes] | None = None, shell: str = "busybox") -> Path:
    """A root tree with busybox's applets (no /etc beyond ``files``); ``shell`` "dash": /bin/sh is this
    machine's dash (Debian's /bin/sh, what `target` hooks meet on a real system), else busybox's ash."""
    assert BUSYBOX is not None
    (folder / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, folder / "bin" / "busybox")
    _link_applets(BUSYBOX, folder)
    (folder / "tmp").mkdir()
    (folder / "tmp").chmod(0o1777)
    (folder / "etc").mkdir()
    (folder / "dev").mkdir()
    for name, minor in (("null", 3), ("zero", 5), ("urandom", 9)):  # the runner binds the live /dev
        os.mknod(folder / "dev" / name, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        (folder / "dev" / name).chmod(0o666)
    write_tree(folder, dict(files or {}))
    if shell == "dash":
        if not copy_program(folder, "dash"):
            pytest.skip("this machine has no dash to copy into the tiny root")
        found = shutil.which("dash")
        assert found is not None
        (folder / "bin" / "sh").unlink()
        (folder / "bin" / "sh").symlink_to(found)
    return folder


def applets_dir(folder: Path) -> Path:
    """``folder`` holding a link to busybox for each applet (wget, sha256sum, realpath ...)."""
    assert BUSYBOX is not None
    folder.mkdir(parents=True)
    _link_applets(BUSYBOX, folder, into=".")
    return folder


def copy_program(root: Path, program: str) -> bool:
    """``program`` (found on PATH) and the shared libraries ``ldd`` lists, copied into ``root`` at the same
    paths; False when this machine has no such program."""
    found = shutil.which(program)
    if found is None:
        return False
    paths = [Path(found)]
    ldd = subprocess.run(["ldd", found], capture_output=True, text=True, check=False).stdout
    for line in ldd.splitlines():
        words = [w for w in line.replace("=>", " ").split() if w.startswith("/")]
        paths.extend(Path(w) for w in words[:1])
    for path in paths:
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copy2(path.resolve(), target)
    return True


def run_target(root: Path, hook: Path, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The hook run in a chroot of ``root`` (its file copied to /run/provision/hook), with ``env`` and PATH, in
    namespaces of its own (a `reboot` ends the namespace, a `hostname` names it, not this machine)."""
    inside = root / "run" / "provision" / "hook"
    inside.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(hook, inside)
    return subprocess.run(
        ["unshare", "--pid", "--fork", "--uts", "--ipc", "--mount", "chroot", str(root), "/run/provision/hook"],
        env={"PATH": PATH, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_direct(
    hook: Path,
    env: Mapping[str, str],
    cwd: Path,
    stdin: str = "",
    path: str | None = None,
    shell: tuple[str, ...] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """The hook run on this machine in ``cwd`` with ``env`` (and PATH: ``path``, else this process's);
    ``shell``: the interpreter to run it with instead of its #! line (busybox's sh for a `live` hook)."""
    return subprocess.run(
        [*shell, str(hook)],
        cwd=cwd,
        env={"PATH": path or os.environ.get("PATH", PATH), **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ----------------------------------------------------------------------------------- the built-in hooks
MAC = "52:54:00:12:34:56"


@functools.cache
def _builtins() -> dict[str, HookFile]:
    return {h.name: h for h in load_catalog([builtin_dir()]).hooks}


def builtin(name: str) -> HookFile:
    return _builtins()[name]


def builtin_env(name: str, params: Mapping[str, object], **facts: FactValue) -> dict[str, str]:
    """The environment provision.hooks.env makes for built-in hook ``name`` (machine MAC, run ``run-1``)."""
    machine: dict[str, FactValue] = dict.fromkeys(FACT_NAMES)
    machine.update(facts)
    return hook_env(builtin(name).header, params, machine, mac=MAC, run="run-1")


def run_builtin(root: Path, hook_name: str, /, **params: object) -> tuple[int, str]:
    """Built-in hook ``hook_name`` run in a chroot of ``root`` (run_target): (exit code, its output)."""
    done = run_target(root, builtin(hook_name).path, builtin_env(hook_name, params))
    return done.returncode, done.stdout + done.stderr


def intact(root: Path) -> bool:
    """Nothing ran that a hostile value held: no marker file, busybox still in the tree."""
    return not (root / "pwned").exists() and (root / "bin" / "busybox").is_file()
