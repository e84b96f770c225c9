"""Software bundles: Debian packages a recipe adds to its image, mirrored into a local signed repository the
server serves at ``/repo/``, and installed on each PC by the built-in ``bundle`` hook (see docs/bundles.md).

Modules: ``schema`` (the bundle file), ``catalog`` (a folder of bundles, checked), ``debs`` (.deb control
fields, pool names), ``resolve`` (apt on an image's package set: what a bundle needs), ``targets`` (the images a
bundle goes onto), ``keys`` (the repository's signing key), ``repo`` (the repository: pool, index, signature),
``sync`` (``bundles check`` and ``bundles sync``).
"""

from provision.bundles.catalog import FOLDER, BundleFile, BundleSet, check_folder, load_folder
from provision.bundles.debs import DebInfo, read_deb
from provision.bundles.errors import BundleError, RepoError
from provision.bundles.keys import RepoKey
from provision.bundles.repo import KEY_FILE, Repository
from provision.bundles.resolve import AptPool, BundleApt, Needed, Target
from provision.bundles.schema import HOOK_MARGIN, Bundle, PackageSpec
from provision.bundles.sync import Resolved, SyncReport, check_archive, sync
from provision.bundles.targets import Placed, TargetFinder, Use, place

__all__ = [
    "FOLDER",
    "HOOK_MARGIN",
    "KEY_FILE",
    "AptPool",
    "Bundle",
    "BundleApt",
    "BundleError",
    "BundleFile",
    "BundleSet",
    "DebInfo",
    "Needed",
    "PackageSpec",
    "Placed",
    "RepoError",
    "RepoKey",
    "Repository",
    "Resolved",
    "SyncReport",
    "Target",
    "TargetFinder",
    "Use",
    "check_archive",
    "check_folder",
    "load_folder",
    "place",
    "read_deb",
    "sync",
]
