"""The image builder: definitions (``images/*.yaml``) -> raw disks that boot BIOS and UEFI -> the image store.

- ``build_image(definition, store)`` builds one image (``provision image build DEF.yaml``).
- ``rebuild_all(images_dir, store)`` rebuilds the images whose inputs changed (``provision image rebuild
  --all``, run nightly by contrib/systemd/provision-image-rebuild.timer).

Modules: ``runner`` (commands, build log), ``disk`` (layout, file systems), ``bootloader`` +
``biosboot`` (GRUB for BIOS, shim + signed GRUB for UEFI), ``tiny`` + ``tinyinit`` (the busybox test image),
``debian`` + ``firstboot`` (mmdebstrap images), ``resolve`` (apt's package versions), ``inputs``
(what a build is made of), ``progress`` (events, results), ``build``, ``rebuild``. See docs/image-build.md.
"""

from __future__ import annotations

from provision.images.builder.build import DEFAULT_LOG_DIR, DEFAULT_WORKDIR, build_image
from provision.images.builder.errors import (
    BuildInterrupted,
    ImageBuildError,
    PackageNotFound,
    StepFailed,
    ToolMissing,
)
from provision.images.builder.inputs import BUILDER_VERSION, Inputs, resolve_inputs
from provision.images.builder.progress import (
    DEBIAN_STEPS,
    TINY_STEPS,
    BuildProgress,
    BuildResult,
    ChunkStats,
    ProgressCallback,
)
from provision.images.builder.rebuild import RebuildResult, rebuild_all
from provision.images.builder.resolve import PackageChanges, package_changes
from provision.images.builder.runner import Command, RecordingRunner, Runner

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
