"""Read-only TFTP server for PXE clients: boot binaries from a folder, GRUB configs rendered per request.

Built on tftpy 0.8.7's per-transfer pieces with its own event loop (docs/tftp.md):

- `protocol`: `parse_request`, `negotiate` (blksize, tsize, timeout), `error_packet`, `TftpErrorCode`,
  `RequestRefused`, the blksize limits.
- `paths`: `normalize_path`, `resolve_path` (containment in the root, symlinks), `open_regular`.
- `transfers`: answering requests and driving downloads (the base of `TftpService`), `DynamicFiles`.
- `limits`: how many transfers run (per client, waiting for a first ACK) and how long a first ACK may take.
- `server`: `TftpService` (start, stop, the event loop thread), `ServiceError`, `quiet_tftpy_logging`.
"""

from provision.tftp.limits import MAX_TRANSFERS
from provision.tftp.paths import normalize_path, open_regular, resolve_path
from provision.tftp.protocol import (
    DEFAULT_BLKSIZE,
    DEFAULT_MAX_BLKSIZE,
    MIN_BLKSIZE,
    RFC_MAX_BLKSIZE,
    Negotiated,
    Request,
    RequestRefused,
    TftpErrorCode,
    error_packet,
    negotiate,
    parse_request,
)
from provision.tftp.server import DEFAULT_RETRIES, DEFAULT_TIMEOUT, ServiceError, TftpService, quiet_tftpy_logging
from provision.tftp.transfers import DynamicFiles

__all__ = [
    "DEFAULT_BLKSIZE",
    "DEFAULT_MAX_BLKSIZE",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_TRANSFERS",
    "MIN_BLKSIZE",
    "RFC_MAX_BLKSIZE",
    "DynamicFiles",
    "Negotiated",
    "Request",
    "RequestRefused",
    "ServiceError",
    "TftpErrorCode",
    "TftpService",
    "error_packet",
    "negotiate",
    "normalize_path",
    "open_regular",
    "parse_request",
    "quiet_tftpy_logging",
    "resolve_path",
]
