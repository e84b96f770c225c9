"""A fake capture agent for the server side's tests (docs/capture.md): what ``provision.agent`` does over the wire,
driven by ``requests`` against a real server, a file standing in for the disk.

- ``disk_chunks(data, chunk_size)``: each chunk's sha256 (None for an all-zero chunk), in disk order.
- ``FakeCapture(url, mac, token, run, chunk_size)``: ``offer(data)`` (every position, in offers of ``per``),
  ``upload(sha, plain)`` (one zstd frame; the response), ``upload_asked(data)`` (every chunk the offers' answers
  named), ``done(data, **over)`` (the CaptureDone; ``over`` replaces fields), ``post``/``put`` (raw responses).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import requests
import zstandard

from provision.wire import paths
from provision.wire.capture import TOKEN_HEADER


def disk_chunks(data: bytes, chunk_size: int) -> list[str | None]:
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    return [None if not any(c) else hashlib.sha256(c).hexdigest() for c in chunks]


@dataclass
class FakeCapture:
    url: str
    mac: str
    token: str
    run: str
    chunk_size: int
    asked: list[str] = field(default_factory=list)
    sent: int = 0

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.url + path, json={"token": self.token, **body}, timeout=30)

    def put(self, sha: str, body: bytes, token: str | None = None) -> requests.Response:
        headers = {TOKEN_HEADER: token or self.token, "Content-Type": "application/zstd"}
        return requests.put(self.url + paths.run_capture_chunk(self.run, sha), data=body, headers=headers, timeout=30)

    def offer(self, data: bytes, per: int = 16, *, upto: int | None = None) -> list[dict[str, Any]]:
        shas = disk_chunks(data, self.chunk_size)[:upto]
        answers = []
        for first in range(0, len(shas), per):
            body = {"disk_size": len(data), "first": first, "chunks": shas[first : first + per]}
            response = self.post(paths.run_capture_offer(self.run), body)
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            assert answer["offered"] == min(len(shas), first + per)
            self.asked.extend(answer["missing"])
            answers.append(answer)
        return answers

    def upload(self, sha: str, plain: bytes) -> requests.Response:
        frame = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(plain)
        self.sent += len(frame)
        return self.put(sha, frame)

    def upload_asked(self, data: bytes) -> int:
        by_sha = {}
        for i in range(0, len(data), self.chunk_size):
            plain = data[i : i + self.chunk_size]
            by_sha[hashlib.sha256(plain).hexdigest()] = plain
        for sha in self.asked:
            response = self.upload(sha, by_sha[sha])
            assert response.status_code == 200, response.text
        return len(self.asked)

    def done(self, data: bytes, **over: Any) -> requests.Response:
        shas = disk_chunks(data, self.chunk_size)
        body = {"disk_size": len(data), "sector_size": 512, "sha256": hashlib.sha256(data).hexdigest(),
                "chunks": len(shas), "holes": shas.count(None), "read_bytes": len(data),
                "uploaded_chunks": len(self.asked), "uploaded_bytes": self.sent, "seconds": 1.5,
                "filesystems": [{"partition": 2, "offset": 2 << 20, "size": 4 << 20, "fs": "ext4", "block_size": 4096,
                                 "free_bytes": 1 << 20}],
                "disk": "/dev/sda", "model": "QEMU HARDDISK", "serial": "GOLDEN-1", **over}  # fmt: skip
        return self.post(paths.run_capture_done(self.run), body)
