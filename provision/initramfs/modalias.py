"""Modalias matching: which modules a kernel's ``modules.alias`` (written by depmod) can load for a device.

Each line is ``alias <pattern> <module>``: the kernel's uevent gives a device's modalias
(``pci:v000010ECd00008168...``) and ``modprobe`` loads the modules whose patterns match it (the live
environment's /init does that). Here the alias file is read back, e.g. to check which modules a live
build makes loadable by alias.
"""

from __future__ import annotations

from provision.initramfs.modules import module_name


def alias_modules(alias_text: str) -> set[str]:
    """The module names that ``modules.alias`` text maps some alias to."""
    names = set()
    for line in alias_text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias":
            names.add(module_name(parts[2]))
    return names
