"""The image builder: definitions (``images/*.yaml``) -> raw disks that boot BIOS and UEFI -> the image store.

- ``build_image(definition, store)`` builds one image (``provision image build DEF.yaml``).
- ``rebuild_all(images_dir, store)`` rebuilds the images whose inputs changed (``provision image rebuild
  --all``, run nightly by contrib/systemd/provision-image-rebuild.timer).

Modules: ``definition`` (the definitions' schema and loader), ``runner`` (commands, build log), ``disk``
(layout, file systems), ``bootloader`` + ``biosboot`` (GRUB for BIOS, shim + signed GRUB for UEFI), ``tiny`` +
``tinyinit`` (the busybox test image), ``debian`` + ``firstboot`` (mmdebstrap images), ``resolve`` (apt's
package versions), ``inputs`` (what a build is made of), ``progress`` (events, results), ``build``,
``rebuild``; ``layout`` writes GPT/MBR tables in Python (synthetic disks for tests and benchmarks). See
docs/image-build.md.

A sibling of the image store (``provision.images``): the builder imports the store, never the reverse.
"""

from __future__ import annotations

from provision.builder.build import DEFAULT_LOG_DIR, DEFAULT_WORKDIR, build_image
from provision.builder.errors import (
    BuildInterrupted,
    ImageBuildError,
    PackageNotFound,
    StepFailed,
    ToolMissing,
)
from provision.builder.inputs import BUILDER_VERSION, Inputs, resolve_inputs
from provision.builder.progress import (
    DEBIAN_STEPS,
    TINY_STEPS,
    BuildProgress,
    BuildResult,
    ChunkStats,
    ProgressCallback,
)
from provision.builder.rebuild import RebuildResult, rebuild_all
from provision.builder.resolve import PackageChanges, package_changes
from provision.builder.runner import Command, RecordingRunner, Runner

__all__ = [
    "BUILDER_VERSION",
    "DEBIAN_STEPS",
    "DEFAULT_LOG_DIR",
    "DEFAULT_WORKDIR",
    "TINY_STEPS",
    "BuildInterrupted",
    "BuildProgress",
    "BuildResult",
    "ChunkStats",
    "Command",
    "ImageBuildError",
    "Inputs",
    "PackageChanges",
    "PackageNotFound",
    "ProgressCallback",
    "RebuildResult",
    "RecordingRunner",
    "Runner",
    "StepFailed",
    "ToolMissing",
    "build_image",
    "package_changes",
    "rebuild_all",
    "resolve_inputs",
]
