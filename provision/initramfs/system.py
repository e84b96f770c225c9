"""A small busybox system as one initramfs: the layout the lab's test initrd and the tiny image's initramfs
share.

``busybox_initramfs`` writes, in this order (the order is part of the archive's bytes): the base folders,
``/dev/console`` and ``/dev/null``, ``/bin/busybox`` and a symlink per applet, the kernel modules with their
dependencies in load order (decompressed, for busybox's ``insmod``) and their paths in
``/etc/provision/modules``, the udhcpc event script (optional), ``/init``, then any extra files. It returns
the plain newc archive (time stamps 0: reproducible) and the load order; the caller compresses it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.initramfs.busybox import UDHCPC_SCRIPT, busybox_applets
from provision.initramfs.cpio import CpioWriter
from provision.initramfs.modules import ModuleTree, read_module

MODULE_LIST = "etc/provision/modules"  # the module files in load order, one absolute path a line
UDHCPC_SCRIPT_PATH = "etc/udhcpc.script"


@dataclass(frozen=True)
class BusyboxInitramfs:
    """An uncompressed newc archive and the names of the kernel modules it holds, in load order."""

    archive: bytes
    modules: list[str]


def busybox_initramfs(
    kernel_modules: Path,
    busybox: Path,
    modules: Sequence[str],
    init: str,
    *,
    dirs: Sequence[str],
    udhcpc: bool = True,
    extra_files: Mapping[str, bytes] | None = None,
) -> BusyboxInitramfs:
    """A busybox initramfs whose ``/init`` is ``init``.

    ``kernel_modules`` is ``/lib/modules/<release>`` of an unpacked kernel, ``busybox`` a static busybox;
    ``modules`` are root module names, their dependencies are added before them (``ModuleTree``). ``dirs`` are
    the base folders, created first. ``udhcpc`` adds ``/etc/udhcpc.script``. ``extra_files`` (path -> bytes)
    come last, executable when they start with ``#!``. Raises ``ModuleError`` for an unknown module.
    """
    tree = ModuleTree(kernel_modules)
    order = tree.load_order(modules)
    cpio = CpioWriter()
    for name in dirs:
        cpio.add_dir(name)
    cpio.add_char_device("dev/console", 5, 1)
    cpio.add_char_device("dev/null", 1, 3, 0o666)
    cpio.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        if applet.strip("/") != "bin/busybox":
            cpio.add_symlink(applet, "/bin/busybox")
    listed: list[str] = []
    for name in order:
        rel = tree.paths[name]
        plain = re.sub(r"\.(xz|gz)$", "", rel)  # read_module decompresses
        target = f"lib/modules/{tree.release}/{plain}"
        cpio.add_file(target, read_module(kernel_modules / rel))
        listed.append("/" + target)
    cpio.add_file(MODULE_LIST, "".join(f"{path}\n" for path in listed).encode())
    if udhcpc:
        cpio.add_file(UDHCPC_SCRIPT_PATH, UDHCPC_SCRIPT.encode(), 0o755)
    cpio.add_file("init", init.encode(), 0o755)
    for name, data in (extra_files or {}).items():
        cpio.add_file(name, data, 0o755 if data.startswith(b"#!") else 0o644)
    return BusyboxInitramfs(cpio.getvalue(), order)
