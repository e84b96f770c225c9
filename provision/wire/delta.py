"""Delta re-imaging (issue 17): what a plan says about the version a machine already holds, and the prediction
of what the new version needs beyond it. Standard library only: the server computes the prediction, the agent
reads it from its plan.

A machine *holds* a version when its last run wrote it, read it back right and ended ``done`` (the server's
record; ``provision.delta`` says the rest of the rule). The new version's data chunks whose sha256 is the held
version's at the same offset and length are *expected right* on the disk; every other data chunk is
*predicted* to be fetched: ``bytes`` (plain, what is written) and ``download`` (the stored zstd frames of the
distinct ones, what comes over the network: a chunk repeated at several offsets comes once).

The prediction is only a prediction: the agent reads and hashes every chunk of the disk before it fetches
anything (``provision.agent.writer``), so a disk that changed since (a user wrote on it, the first boot's
logs, the hooks, growing the root file system) costs the chunks that changed, fetched and verified like any
other, and the run records both figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from provision.wire.index import SHA256, Chunk
from provision.wire.schema import Message, rule


@dataclass(frozen=True)
class Prediction:
    """What a new version needs beyond a held one (``predict``). ``chunks``, ``bytes``: its data chunks not
    expected right (plain bytes, each offset counted); ``download``: the stored frames of their distinct
    sha256s; ``total_bytes``, ``total_download``: the same for the whole version (what a blank disk needs)."""

    chunks: int
    bytes: int
    download: int
    total_chunks: int
    total_bytes: int
    total_download: int

    @property
    def share(self) -> float:
        """The predicted download as a share of the whole version's (0 for a version with no data)."""
        return self.download / self.total_download if self.total_download else 0.0


def predict(held: Iterable[Chunk], new: Iterable[Chunk], sizes: Mapping[str, int]) -> Prediction:
    """The prediction for writing ``new`` (a version's chunks) over a disk holding ``held``: a data chunk of
    ``new`` is expected right when ``held`` has a chunk of the same offset, length and sha256. ``sizes``: the
    stored (compressed) size of each chunk by sha256; a chunk missing there counts its plain length."""
    right = {(c.offset, c.length, c.sha256) for c in held if c.sha256 is not None}
    chunks = plain = total_chunks = total_plain = 0
    needed: dict[str, int] = {}  # sha256 -> plain length, of the chunks to fetch
    every: dict[str, int] = {}  # the same, of every data chunk
    for chunk in new:
        if chunk.sha256 is None:
            continue
        total_chunks += 1
        total_plain += chunk.length
        every[chunk.sha256] = chunk.length
        if (chunk.offset, chunk.length, chunk.sha256) not in right:
            chunks += 1
            plain += chunk.length
            needed[chunk.sha256] = chunk.length
    download = sum(sizes.get(sha, length) for sha, length in needed.items())
    total_download = sum(sizes.get(sha, length) for sha, length in every.items())
    return Prediction(chunks, plain, download, total_chunks, total_plain, total_download)


@dataclass(frozen=True)
class HeldVersion(Message):
    """The plan's ``held``: the version the machine's record says its disk holds (``image``, its label
    ``version``, ``digest``, the ``run`` that verified it and the ``target`` disk that run wrote, as its agent
    named it) and the prediction for the planned version: ``chunks``, ``bytes`` (plain) and ``download``
    (compressed) expected to be fetched."""

    omit_none = True

    image: str = field(metadata=rule(max_length=64))
    version: str = field(metadata=rule(max_length=128))
    digest: str = field(metadata=rule(pattern=SHA256.pattern))
    run: str = field(metadata=rule(max_length=64))
    chunks: int = field(metadata=rule(ge=0))
    bytes: int = field(metadata=rule(ge=0))
    download: int = field(metadata=rule(ge=0))
    target: str | None = field(default=None, metadata=rule(max_length=4096, clean_text=True))

    @classmethod
    def of(cls, image: str, version: str, digest: str, run: str, prediction: Prediction,
           target: str | None = None) -> HeldVersion:  # fmt: skip
        return cls(image, version, digest, run, prediction.chunks, prediction.bytes, prediction.download, target)
