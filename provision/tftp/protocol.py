"""TFTP wire format: request decoding, option answers (RFC 2347/2348/2349), ERROR packets and codes."""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from provision.errors import FatalError

MIN_BLKSIZE = 8  # RFC 2348
RFC_MAX_BLKSIZE = 65464  # RFC 2348
DEFAULT_MAX_BLKSIZE = 1468  # 1500-byte Ethernet MTU - 20 (IPv4) - 8 (UDP) - 4 (TFTP): no IP fragments
DEFAULT_BLKSIZE = 512  # RFC 1350, when the client asks for no blksize

_RRQ, _WRQ, _ERROR = 1, 2, 5


class TftpErrorCode(enum.IntEnum):
    """RFC 1350 error codes this server sends."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    ILLEGAL_OPERATION = 4
    UNKNOWN_TRANSFER_ID = 5


class RequestRefused(FatalError):
    """One request is refused: `code` is the TFTP error sent back, `reason` says why (for the log)."""

    def __init__(self, path: str, reason: str, code: TftpErrorCode) -> None:
        super().__init__(f"{path!r}: {reason}", path=path, reason=reason, code=code)
        self.path = path
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Request:
    """A decoded RRQ or WRQ. Option names are lower case; values are kept as sent."""

    opcode: int
    filename: str
    mode: str
    options: dict[str, str]


def parse_request(data: bytes) -> Request:
    """Decode an RRQ/WRQ datagram: `opcode filename\\0 mode\\0 [name\\0 value\\0]...`.

    Lenient where real clients are sloppy (trailing padding NULs, a dangling option name), strict where the
    request would be ambiguous. Raises RequestRefused(ILLEGAL_OPERATION) when it cannot be decoded.
    """
    if len(data) < 4:
        raise RequestRefused("", "request shorter than 4 bytes", TftpErrorCode.ILLEGAL_OPERATION)
    opcode = int.from_bytes(data[:2], "big")
    if opcode not in (_RRQ, _WRQ):
        raise RequestRefused("", f"opcode {opcode} is not a read or write request", TftpErrorCode.ILLEGAL_OPERATION)
    fields = data[2:].split(b"\0")
    if len(fields) < 3 or fields[-1] != b"":
        raise RequestRefused("", "file name and mode are not NUL-terminated", TftpErrorCode.ILLEGAL_OPERATION)
    raw_name, raw_mode, rest = fields[0], fields[1], fields[2:-1]
    try:
        filename = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        shown = raw_name.decode("ascii", "backslashreplace")
        raise RequestRefused(shown, "file name is not UTF-8", TftpErrorCode.ILLEGAL_OPERATION) from None
    mode = raw_mode.decode("ascii", "replace").lower()
    while rest and rest[-1] == b"":
        rest.pop()
    options: dict[str, str] = {}
    for i in range(0, len(rest) - 1, 2):
        name = rest[i].decode("ascii", "replace").lower()
        if name:
            options[name] = rest[i + 1].decode("ascii", "replace")
    return Request(opcode, filename, mode, options)


@dataclass(frozen=True)
class Negotiated:
    """Options accepted for one transfer: what the OACK says, and the values in force."""

    oack: dict[str, str]
    blksize: int
    timeout: float


def negotiate(options: Mapping[str, str], size: int, *, max_blksize: int, timeout: float) -> Negotiated:
    """Answer RFC 2347 options for a download of `size` bytes.

    blksize (RFC 2348) is capped at `max_blksize`; below 8 or not a number it is ignored (512 stays). tsize
    (RFC 2349) is answered with the size. timeout (RFC 2349, 1-255 s) is accepted and used for resends.
    Anything else (windowsize, multicast ...) is dropped: it is left out of the OACK, as RFC 2347 requires.
    """
    oack: dict[str, str] = {}
    blksize, seconds = DEFAULT_BLKSIZE, timeout
    for name, value in options.items():
        number = _as_int(value)
        if name == "blksize" and number is not None and number >= MIN_BLKSIZE:
            blksize = min(number, max_blksize)
            oack[name] = str(blksize)
        elif name == "tsize":
            oack[name] = str(size)
        elif name == "timeout" and number is not None and 1 <= number <= 255:
            seconds = float(number)
            oack[name] = str(number)
    return Negotiated(oack, blksize, seconds)


def _as_int(value: str) -> int | None:
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


def error_packet(code: TftpErrorCode, message: str) -> bytes:
    """An RFC 1350 ERROR datagram (tftpy's own ignores the message and sends a fixed text)."""
    return struct.pack("!HH", _ERROR, code) + message.encode("ascii", "replace")[:200] + b"\0"
