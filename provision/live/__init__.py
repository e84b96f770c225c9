"""The live environment PCs network-boot into to be imaged: Debian's signed kernel + an initramfs with the agent.

- ``packages``: the Debian package set, the archive, the mmdebstrap call, the tree's cache key.
- ``bootstrap``: the prepared tree (mmdebstrap, busybox links, strip, .pyc), cached by key.
- ``strip``: what is left out of the tree.
- ``modules``: the kernel module selection (+ dependencies, firmware names), ``depmod``.
- ``payload``: the agent's code and its import check.
- ``initscript``: /init, its shell functions, the udhcpc script; the markers.
- ``pack``: the zstd initramfs (through ``provision.initramfs``'s streaming cpio writer).
- ``manifest``: ``live.json``.
- ``build``: ``build_live`` / ``ensure_live``, the whole build.

See docs/live.md.
"""

from provision.live.build import LiveResult, build_live, ensure_live, live_missing
from provision.live.errors import LiveBuildError
from provision.live.manifest import INITRD, LIVE_JSON, SIZE_GOAL, VMLINUZ, LiveManifest, read_manifest

__all__ = [
    "INITRD",
    "LIVE_JSON",
    "SIZE_GOAL",
    "VMLINUZ",
    "LiveBuildError",
    "LiveManifest",
    "LiveResult",
    "build_live",
    "ensure_live",
    "live_missing",
    "read_manifest",
]
