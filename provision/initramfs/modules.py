"""The kernel module tree of one release (``/lib/modules/<release>``): module names, module files, their
``.modinfo`` and the order they load in.

Dependencies come from ``modules.dep`` when the tree has one; a kernel unpacked with ``dpkg -x`` has none
(depmod runs at install time), so they are then read from each module's ELF ``.modinfo`` section
(``depends=``), which is what depmod would use too. Names built into the kernel (``modules.builtin``) need
no file and are left out of load orders.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import struct
from collections.abc import Sequence
from pathlib import Path

from provision.initramfs.errors import ModuleError

log = logging.getLogger(__name__)

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def module_name(path: str) -> str:
    """``kernel/drivers/net/virtio_net.ko.xz`` -> ``virtio_net`` ('-' and '_' are the same to the kernel)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def read_module(path: Path) -> bytes:
    """A module file's ELF bytes, decompressed (insmod cannot load .ko.xz)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise ModuleError(f"{path}: zstd-compressed modules are not supported", path=str(path))
    return data


def modinfo(elf: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` key=value strings of a module's ELF image (64-bit little-endian)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ModuleError("not a 64-bit little-endian ELF module")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", elf, shoff + index * shentsize)
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    info: dict[str, list[str]] = {}
    for index in range(shnum):
        name_off, offset, size = section(index)
        end = elf.index(b"\0", str_off + name_off)
        if elf[str_off + name_off : end] != b".modinfo":
            continue
        for item in elf[offset : offset + size].split(b"\0"):
            key, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep:
                info.setdefault(key, []).append(value)
    return info


class ModuleTree:
    """The modules of one kernel release (``/lib/modules/<release>``) and their dependencies."""

    def __init__(self, root: Path) -> None:
        if not (root / "kernel").is_dir():
            raise ModuleError(f"{root}: not a kernel modules directory (no kernel/)", path=str(root))
        self.root = root
        self.release = root.name
        self.paths: dict[str, str] = {}  # name -> path relative to root
        self._deps: dict[str, list[str]] = {}
        dep_file = root / "modules.dep"
        if dep_file.is_file():
            for line in dep_file.read_text(encoding="utf-8").splitlines():
                rel, _, deps = line.partition(":")
                if rel.strip():
                    self.paths[module_name(rel)] = rel.strip()
                    self._deps[module_name(rel)] = [module_name(d) for d in deps.split()]
        else:
            for path in sorted((root / "kernel").rglob("*.ko*")):
                if path.name.endswith(MODULE_SUFFIXES):
                    self.paths[module_name(path.name)] = path.relative_to(root).as_posix()
        builtin = root / "modules.builtin"
        text = builtin.read_text(encoding="utf-8") if builtin.is_file() else ""
        self.builtin = {module_name(line) for line in text.split()}

    def depends(self, name: str) -> list[str]:
        """Direct dependencies of module ``name``."""
        if name not in self._deps:
            info = modinfo(read_module(self.root / self.paths[name]))
            deps = [d for value in info.get("depends", []) for d in value.split(",") if d]
            self._deps[name] = [module_name(d) for d in deps]
        return self._deps[name]

    def load_order(self, names: Sequence[str]) -> list[str]:
        """``names`` and their dependencies, each after what it needs; built-in modules are left out."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(raw: str, wanted_by: str | None) -> None:
            name = module_name(raw)
            if name in order or name in visiting:
                return
            if name not in self.paths:
                if name in self.builtin:
                    log.debug("module %s is built into %s", name, self.release)
                    return
                needed = f" (needed by {wanted_by})" if wanted_by else ""
                raise ModuleError(
                    f"kernel module {name}{needed} not found in {self.root}", module=name, path=str(self.root)
                )
            visiting.add(name)
            for dep in self.depends(name):
                visit(dep, name)
            visiting.discard(name)
            order.append(name)

        for raw in names:
            visit(raw, None)
        return order
