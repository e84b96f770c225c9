"""The imaging agent: runs inside the live Linux on each PC (standard library, requests and zstandard only).

``write_image`` writes an image version from the server's chunk store onto a disk, and returns a
``WriteReport`` only when every chunk read back right; ``grow_root`` then grows the root partition and its
file system to the end of the disk, and ``write_firstboot_secret`` writes the run's first-boot credential into
it. ``erasure`` erases every drive of the machine by its strongest method and verifies it
(``erasure.engine.erase_drives``; docs/erasure.md), the erasure step of the run (``erasestep``) posts the
records. ``multicast`` takes a run's chunks from the server's carousel when its plan says so (the writer's
chunk source; docs/multicast.md). ``capture`` reads a golden PC's disk, its file systems' free space as zeros, and
sends the chunks the server lacks (``capture.step.capture_disk``; docs/capture.md). See ``docs/agent.md``.
"""

from provision.agent.disk_io import DiskTarget
from provision.agent.errors import (
    ChunkCorrupt,
    FetchFailed,
    HttpRefused,
    IndexInvalid,
    Mismatch,
    TargetError,
    TargetTooSmall,
    VerifyFailed,
    WriteError,
)
from provision.agent.fetch import HttpSession, RetryPolicy
from provision.agent.index import Chunk, Index, read_index
from provision.agent.progress import Progress
from provision.agent.report import Incident, WriteReport
from provision.agent.writer import WIPES, Wipe, write_image

__all__ = [
    "WIPES",
    "Chunk",
    "ChunkCorrupt",
    "DiskTarget",
    "FetchFailed",
    "HttpRefused",
    "HttpSession",
    "Incident",
    "Index",
    "IndexInvalid",
    "Mismatch",
    "Progress",
    "RetryPolicy",
    "TargetError",
    "TargetTooSmall",
    "VerifyFailed",
    "Wipe",
    "WriteError",
    "WriteReport",
    "read_index",
    "write_image",
]

from provision.agent.disks import (
    AmbiguousTarget,
    Disk,
    NoTargetDisk,
    TargetRuleInvalid,
    choose_target,
    live_medium_devices,
    parse_lsblk_disks,
)
from provision.agent.errors import GptInvalid, GrowError, GrowToolFailed, SeedError, SeedToolFailed
from provision.agent.grow import GrowResult, grow_root
from provision.agent.inventory import collect_probe, read_kernel_args
from provision.agent.seed import SeedResult, write_firstboot_secret

__all__ += [
    "AmbiguousTarget",
    "Disk",
    "GptInvalid",
    "GrowError",
    "GrowResult",
    "GrowToolFailed",
    "NoTargetDisk",
    "SeedError",
    "SeedResult",
    "SeedToolFailed",
    "TargetRuleInvalid",
    "choose_target",
    "collect_probe",
    "grow_root",
    "live_medium_devices",
    "parse_lsblk_disks",
    "read_kernel_args",
    "write_firstboot_secret",
]
