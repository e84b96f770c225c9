"""Errors of software bundles: a bundle that cannot be used, the local repository, its signing key."""

from __future__ import annotations

from provision.errors import FatalError


class BundleError(FatalError):
    """A bundle (or one of its local .deb files) cannot be used; facts name the bundle, the file, the package."""


class RepoError(FatalError):
    """The local repository cannot be written, indexed or signed; facts name the command, its exit code, the path."""
