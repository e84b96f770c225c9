"""Boot files from Debian packages: fetch .debs with apt, unpack them, lay out a TFTP/HTTP boot root.

Packages come from the machine's own archive (the URI in its apt sources, never a hard-coded host):
iPXE from Debian 13 "trixie" (its 2025 iPXE does not wait ~13 s after DHCP like Debian 12's), and from
the machine's own suite: shim-signed, grub-efi-amd64-signed, the signed kernel (linux-image-amd64 ->
linux-image-<abi>-amd64) and busybox-static.

apt runs with a private configuration (own lists, cache and an empty dpkg status), so nothing on the
machine changes and no root is needed. Each package is unpacked once with ``dpkg -x`` into
``<cache>/<name>_<version>/``; a second run with fresh lists is a no-op.

Run ``python -m provision.bootfiles DEST`` (or ``scripts/fetch-boot-files``).

Modules: ``sources`` (the machine's apt sources), ``debcache`` (private apt, unpacked packages),
``root`` (the boot root and its MANIFEST.json), ``errors``, ``cli`` (the command line).
"""

from __future__ import annotations

import logging

from provision.bootfiles.cli import main
from provision.bootfiles.debcache import (
    APT_TIMEOUT,
    DEFAULT_CACHE,
    HOST,
    IPXE_SUITE,
    LISTS_MAX_AGE,
    AptRepo,
    DebCache,
    Package,
    depends_names,
    kernel_modules_dir,
    kernel_release,
    parse_control,
)
from provision.bootfiles.errors import AptFailed, BootFilesError, PackageMissing
from provision.bootfiles.root import (
    LAYOUT,
    MANIFEST,
    BootFile,
    BootRoot,
    install_boot_root,
    manifest_dict,
    qemu_roms,
    read_manifest,
    sha256_file,
    write_manifest,
)
from provision.bootfiles.sources import (
    DEFAULT_KEYRING,
    AptSource,
    archive_source,
    host_codename,
    one_line_entry,
    parse_deb822_sources,
    parse_one_line_sources,
    read_machine_sources,
)

log = logging.getLogger(__name__)  # parent of the modules' loggers

__all__ = [
    "APT_TIMEOUT",
    "DEFAULT_CACHE",
    "DEFAULT_KEYRING",
    "HOST",
    "IPXE_SUITE",
    "LAYOUT",
    "LISTS_MAX_AGE",
    "MANIFEST",
    "AptFailed",
    "AptRepo",
    "AptSource",
    "BootFile",
    "BootFilesError",
    "BootRoot",
    "DebCache",
    "Package",
    "PackageMissing",
    "archive_source",
    "depends_names",
    "host_codename",
    "install_boot_root",
    "kernel_modules_dir",
    "kernel_release",
    "main",
    "manifest_dict",
    "one_line_entry",
    "parse_control",
    "parse_deb822_sources",
    "parse_one_line_sources",
    "qemu_roms",
    "read_machine_sources",
    "read_manifest",
    "sha256_file",
    "write_manifest",
]
