"""The initramfs toolkit: what the live environment, the tiny image builder and the lab build initramfs
images with.

- ``newc``: the cpio "newc" format: ``header``, ``pad``, ``read_newc``.
- ``cpio``: the writer: ``CpioStream`` (streaming, to any sink) and ``CpioWriter`` (the same over memory).
- ``modules``: a kernel module tree: ``ModuleTree`` (load order with dependencies), ``module_name``,
  ``read_module``, ``modinfo``, ``MODULE_SUFFIXES``.
- ``modalias``: ``alias_modules`` (modules.alias).
- ``busybox``: ``busybox_applets``, ``UDHCPC_SCRIPT``.
- ``system``: ``busybox_initramfs`` (-> ``BusyboxInitramfs``): a small busybox system with kernel modules and
  an ``/init``, the layout the lab's test initrd and the tiny image's initramfs share.
- ``errors``: ``InitrdError`` -> ``CpioError``, ``ModuleError`` (all ``FatalError``s).

Nothing here knows the live environment, the images or the lab; they import it.
"""

from provision.initramfs.busybox import UDHCPC_SCRIPT, busybox_applets
from provision.initramfs.cpio import CpioStream, CpioWriter
from provision.initramfs.errors import CpioError, InitrdError, ModuleError
from provision.initramfs.modalias import alias_modules
from provision.initramfs.modules import MODULE_SUFFIXES, ModuleTree, modinfo, module_name, read_module
from provision.initramfs.newc import header, read_newc
from provision.initramfs.system import BusyboxInitramfs, busybox_initramfs

__all__ = [
    "MODULE_SUFFIXES",
    "UDHCPC_SCRIPT",
    "BusyboxInitramfs",
    "CpioError",
    "CpioStream",
    "CpioWriter",
    "InitrdError",
    "ModuleError",
    "ModuleTree",
    "alias_modules",
    "busybox_applets",
    "busybox_initramfs",
    "header",
    "modinfo",
    "module_name",
    "read_module",
    "read_newc",
]
