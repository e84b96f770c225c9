"""The initramfs toolkit's errors: one base, one class per failure kind, all ``FatalError``s.

``InitrdError`` (catch it for any toolkit failure)
 +-- ``CpioError``: an archive entry cannot be written or read as asked
 +-- ``ModuleError``: a kernel module or module tree cannot be used
"""

from __future__ import annotations

from provision.errors import FatalError


class InitrdError(FatalError):
    """An initramfs cannot be built: the base of ``CpioError`` and ``ModuleError``."""


class CpioError(InitrdError):
    """An archive entry cannot be written as asked (duplicate or empty name, a name under a symlink, a file
    that changed while read, the archive already closed, a bad device kind), or an archive is not newc."""


class ModuleError(InitrdError):
    """A kernel module cannot be used: not a modules directory, a module not found (nor built in), not a
    64-bit little-endian ELF module, or compressed in a way the toolkit cannot read (zstd)."""
