"""Errors of the image store: each names the image, file or chunk it is about (as facts, not only text)."""

from __future__ import annotations

from provision.errors import FatalError, RetryableError


class ImageError(FatalError):
    """Bad input or a refused operation on the image store: a raw file that is not a disk, a bad name or
    reference, a version that cannot be published. ``facts`` carries ``path``/``name``/``ref`` as known."""

    status_code = 400


class ImageNotFound(ImageError):
    """No such image, version or chunk."""

    status_code = 404


class CorruptImage(ImageError):
    """Stored data does not match its digest (an index file or a chunk): found by reading, not by input."""

    status_code = 500

    @property
    def http_reason(self) -> str:
        return f"image store problem: {self.message}"


class MissingChunk(CorruptImage, ImageNotFound):
    """A chunk that a stored version references is not in the store: the store is damaged (HTTP 500)."""


class StoreBusy(RetryableError):
    """Another publish, retention or import holds the store lock for longer than the timeout."""
