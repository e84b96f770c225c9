"""TFTP request decoding, path containment (with real symlinks in tmp_path), option answers: no sockets."""

from __future__ import annotations

import errno
import logging
import os
import struct
import time

import pytest

from provision.errors import FatalError
from provision.tftp import (
    DEFAULT_MAX_BLKSIZE,
    RequestRefused,
    ServiceError,
    TftpErrorCode,
    TftpService,
    error_packet,
    negotiate,
    normalize_path,
    open_regular,
    parse_request,
    quiet_tftpy_logging,
    resolve_path,
)

NOT_FOUND = TftpErrorCode.FILE_NOT_FOUND
DENIED = TftpErrorCode.ACCESS_VIOLATION


# --- normalize_path: pure strings ---


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("pxelinux.0", "pxelinux.0"),
        ("/pxelinux.0", "pxelinux.0"),
        ("//pxelinux.0", "pxelinux.0"),
        ("/etc/passwd", "etc/passwd"),
        ("grub/grub.cfg", "grub/grub.cfg"),
        ("/grub//hosts/./52:54:00:12:34:56.cfg", "grub/hosts/52:54:00:12:34:56.cfg"),
        ("./a/./b/", "a/b"),
        ("...", "..."),
        ("..a/b..", "..a/b.."),
        ("café/ü.efi", "café/ü.efi"),
        ("52%3A54%3A00.cfg", "52%3A54%3A00.cfg"),
    ],
)
def test_normalize_accepts(requested, expected):
    assert normalize_path(requested) == expected


@pytest.mark.parametrize(
    ("requested", "reason"),
    [
        ("../etc/passwd", "'..'"),
        ("/../etc/passwd", "'..'"),
        ("a/../../etc/passwd", "'..'"),
        ("a/..", "'..'"),
        ("..", "'..'"),
        ("..\\etc\\passwd", "backslash"),
        ("boot\\x86\\wdsnbp.com", "backslash"),
        ("a\0b", "NUL"),
        ("pxelinux.0\0../../etc/passwd", "NUL"),
        ("", "root folder"),
        ("/", "root folder"),
        ("./", "root folder"),
    ],
)
def test_normalize_refuses(requested, reason):
    with pytest.raises(RequestRefused) as caught:
        normalize_path(requested)
    assert caught.value.code == DENIED
    assert reason in caught.value.reason
    assert caught.value.path == requested
    assert isinstance(caught.value, FatalError)


# --- resolve_path: the file system, with symlinks ---


@pytest.fixture
def tree(tmp_path):
    """root/ with files, a folder, inside and outside symlinks; outside/ beside it holds a secret."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "grub" / "x86_64-efi").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("secret\n")
    (root / "pxelinux.0").write_bytes(b"boot")
    (root / "grub" / "x86_64-efi" / "command.lst").write_text("x\n")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("not the real one\n")
    (root / "alias.0").symlink_to("pxelinux.0")  # relative, inside
    (root / "abs-alias").symlink_to(root / "pxelinux.0")  # absolute, inside
    (root / "efi").symlink_to("grub/x86_64-efi")  # folder symlink, inside
    (root / "out-file").symlink_to(outside / "secret")
    (root / "out-rel").symlink_to("../outside/secret")
    (root / "out-dir").symlink_to(outside)
    (root / "out-root").symlink_to("/")
    (root / "grub" / "up").symlink_to("..")  # stays inside: root
    (root / "grub" / "upup").symlink_to("../..")  # leaves
    (root / "dangling").symlink_to("missing")
    (root / "dangling-out").symlink_to(outside / "missing")
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    os.mkfifo(root / "fifo")
    return root


@pytest.mark.parametrize(
    ("requested", "real"),
    [
        ("pxelinux.0", "pxelinux.0"),
        ("/pxelinux.0", "pxelinux.0"),
        ("/etc/passwd", "etc/passwd"),
        ("alias.0", "pxelinux.0"),
        ("abs-alias", "pxelinux.0"),
        ("efi/command.lst", "grub/x86_64-efi/command.lst"),
        ("/grub/x86_64-efi/command.lst", "grub/x86_64-efi/command.lst"),
        ("grub/up/pxelinux.0", "pxelinux.0"),
    ],
)
def test_resolve_inside(tree, requested, real):
    assert resolve_path(tree, requested) == (tree / real).resolve()


@pytest.mark.parametrize(
    ("requested", "code", "reason"),
    [
        ("missing", NOT_FOUND, "not found"),
        ("/etc/shadow", NOT_FOUND, "not found"),
        ("pxelinux.0/x", NOT_FOUND, "not found"),
        ("dangling", NOT_FOUND, "not found"),
        ("out-file", DENIED, "outside"),
        ("out-rel", DENIED, "outside"),
        ("out-dir/secret", DENIED, "outside"),
        ("out-root/etc/passwd", DENIED, "outside"),
        ("grub/upup/outside/secret", DENIED, "outside"),
        ("dangling-out", DENIED, "outside"),
        ("../outside/secret", DENIED, "'..'"),
        ("..\\outside\\secret", DENIED, "backslash"),
        ("grub", DENIED, "regular"),
        ("efi", DENIED, "regular"),
        ("fifo", DENIED, "regular"),
        ("loop-a", DENIED, "cannot read"),
        ("/", DENIED, "root folder"),
    ],
)
def test_resolve_refuses(tree, requested, code, reason):
    with pytest.raises(RequestRefused) as caught:
        resolve_path(tree, requested)
    assert caught.value.code == code
    assert reason in caught.value.reason


def test_root_prefix_is_not_special(tree):
    """tftpy serves a name starting with its root verbatim; here it is one more path inside the root."""
    with pytest.raises(RequestRefused) as caught:
        resolve_path(tree, f"{tree}/pxelinux.0")
    assert caught.value.code == NOT_FOUND


def test_root_reached_through_a_symlink(tree, tmp_path):
    link = tmp_path / "tftproot"
    link.symlink_to(tree)
    assert resolve_path(link, "alias.0") == (tree / "pxelinux.0").resolve()
    with pytest.raises(RequestRefused):
        resolve_path(link, "out-file")


def test_sibling_with_common_prefix_is_outside(tmp_path):
    """Containment is by path components, not string prefix: /x/root-evil is not inside /x/root."""
    root, evil = tmp_path / "root", tmp_path / "root-evil"
    root.mkdir()
    evil.mkdir()
    (evil / "f").write_text("no")
    (root / "f").symlink_to(evil / "f")
    with pytest.raises(RequestRefused, match="outside"):
        resolve_path(root, "f")


def test_open_regular(tree):
    fileobj, size = open_regular(resolve_path(tree, "alias.0"))
    with fileobj:
        assert (fileobj.read(), size) == (b"boot", 4)


def test_open_regular_refuses_a_fifo_without_blocking(tree):
    started = time.monotonic()
    with pytest.raises(RequestRefused, match="regular"):
        open_regular(tree / "fifo")
    assert time.monotonic() - started < 1


def test_open_regular_refuses_a_symlink_swapped_in(tree):
    with pytest.raises(RequestRefused, match="cannot open"):
        open_regular(tree / "alias.0")  # O_NOFOLLOW: a path resolve_path returned has no symlink


# --- parse_request ---


def rrq(*fields: str | bytes, opcode: int = 1) -> bytes:
    parts = [f if isinstance(f, bytes) else f.encode() for f in fields]
    return struct.pack("!H", opcode) + b"".join(p + b"\0" for p in parts)


def test_parse_rrq_with_options():
    request = parse_request(rrq("/pxelinux.0", "OCTET", "BlkSize", "1468", "tsize", "0", "windowsize", "4"))
    assert request.opcode == 1
    assert request.filename == "/pxelinux.0"
    assert request.mode == "octet"
    assert request.options == {"blksize": "1468", "tsize": "0", "windowsize": "4"}


def test_parse_wrq_and_padding():
    request = parse_request(rrq("up.bin", "octet", opcode=2) + b"\0\0\0")
    assert (request.opcode, request.filename, request.options) == (2, "up.bin", {})


def test_parse_ignores_a_dangling_option_name():
    assert parse_request(rrq("f", "octet", "tsize", "0", "blksize")).options == {"tsize": "0"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\0\1",
        b"\0\1f\0",
        b"\0\1f\0octet",  # mode not terminated
        b"\0\3\0\1data",  # DATA is no request
        b"\0\4\0\1",
        rrq(b"caf\xe9", "octet"),  # Latin-1, not UTF-8
    ],
)
def test_parse_refuses(data):
    with pytest.raises(RequestRefused) as caught:
        parse_request(data)
    assert caught.value.code == TftpErrorCode.ILLEGAL_OPERATION


# --- negotiate ---


def test_negotiate_answers_known_options_only():
    agreed = negotiate(
        {"blksize": "1468", "tsize": "0", "timeout": "3", "windowsize": "4", "multicast": ""},
        1234,
        max_blksize=DEFAULT_MAX_BLKSIZE,
        timeout=2.0,
    )
    assert agreed.oack == {"blksize": "1468", "tsize": "1234", "timeout": "3"}
    assert (agreed.blksize, agreed.timeout) == (1468, 3.0)


@pytest.mark.parametrize(
    ("value", "blksize", "in_oack"),
    [
        ("512", 512, True),
        ("8", 8, True),
        ("1432", 1432, True),
        ("1468", 1468, True),
        ("1469", 1468, True),
        ("65464", 1468, True),
        ("65536", 1468, True),
        ("99999999999999999999", 512, False),
        ("7", 512, False),
        ("0", 512, False),
        ("-1", 512, False),
        ("abc", 512, False),
        ("", 512, False),
        ("١٤٦٨", 512, False),  # Arabic-Indic digits: str.isdigit() says yes, TFTP says no
    ],
)
def test_negotiate_blksize(value, blksize, in_oack):
    agreed = negotiate({"blksize": value}, 10, max_blksize=DEFAULT_MAX_BLKSIZE, timeout=2.0)
    assert agreed.blksize == blksize
    assert ("blksize" in agreed.oack) is in_oack
    if in_oack:
        assert agreed.oack["blksize"] == str(blksize)


def test_negotiate_blksize_cap_is_configurable():
    assert negotiate({"blksize": "65464"}, 1, max_blksize=65464, timeout=1).blksize == 65464
    assert negotiate({"blksize": "9000"}, 1, max_blksize=1024, timeout=1).blksize == 1024


@pytest.mark.parametrize(
    ("value", "accepted"), [("1", True), ("255", True), ("0", False), ("256", False), ("x", False)]
)
def test_negotiate_timeout(value, accepted):
    agreed = negotiate({"timeout": value}, 1, max_blksize=1468, timeout=2.0)
    assert ("timeout" in agreed.oack) is accepted
    assert agreed.timeout == (float(value) if accepted else 2.0)


def test_negotiate_nothing_means_no_oack():
    agreed = negotiate({"windowsize": "8"}, 5, max_blksize=1468, timeout=2.0)
    assert (agreed.oack, agreed.blksize) == ({}, 512)


def test_tsize_answers_the_real_size_whatever_the_client_sent():
    assert negotiate({"tsize": "999"}, 0, max_blksize=1468, timeout=1).oack == {"tsize": "0"}


def test_error_packet():
    assert error_packet(TftpErrorCode.FILE_NOT_FOUND, "File not found") == b"\0\5\0\1File not found\0"
    assert error_packet(TftpErrorCode.NOT_DEFINED, "é") == b"\0\5\0\0?\0"


# --- service construction, errors, tftpy's log levels ---


def test_service_error_carries_its_facts():
    exc = ServiceError("port busy", address="0.0.0.0", port=69, interface="br0", errno=98)
    assert isinstance(exc, FatalError)
    assert (exc.address, exc.port, exc.interface, exc.errno) == ("0.0.0.0", 69, "br0", 98)
    assert exc.facts["port"] == 69
    assert not exc.retryable


def test_start_refuses_a_missing_root(tmp_path):
    service = TftpService(tmp_path / "nope", "127.0.0.1", 0)
    with pytest.raises(ServiceError, match="not a folder") as caught:
        service.start()
    assert caught.value.port == 0
    assert not service.running


def test_max_blksize_must_be_legal(tmp_path):
    with pytest.raises(ValueError, match="max_blksize"):
        TftpService(tmp_path, max_blksize=65465)
    with pytest.raises(ValueError, match="max_blksize"):
        TftpService(tmp_path, max_blksize=7)


def test_stop_before_start_is_harmless(tmp_path):
    TftpService(tmp_path).stop()


@pytest.mark.parametrize(
    ("level", "message", "expected"),
    [
        (logging.INFO, "Sending ack to block 3", None),
        (logging.WARNING, "Resending packet DAT packet: block 4", None),
        (logging.ERROR, "ERR packet - errorcode: 8, message: b'User aborted the transfer'", logging.INFO),
        (logging.ERROR, "Received ERR packet from peer: ERR packet: errorcode = 8", logging.INFO),
        (logging.ERROR, "Can't find the owner for this packet. Discarding.", logging.ERROR),
    ],
)
def test_tftpy_log_levels(caplog, level, message, expected):
    """With the application at INFO, tftpy's chatter is dropped and a client's ERROR packet is INFO."""
    quiet_tftpy_logging()
    caplog.set_level(logging.INFO)
    logging.getLogger("tftpy.TftpStates").log(level, message)
    records = [r for r in caplog.records if r.name == "tftpy.TftpStates"]
    assert [r.levelno for r in records] == ([] if expected is None else [expected])


def test_tftpy_chatter_is_kept_at_debug(caplog):
    quiet_tftpy_logging()
    quiet_tftpy_logging()  # idempotent
    filters = logging.getLogger("tftpy.TftpStates").filters
    assert [type(f).__name__ for f in filters].count("_TftpyLogFilter") == 1
    caplog.set_level(logging.DEBUG)
    logging.getLogger("tftpy.TftpStates").info("Reached EOF on file x")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("DEBUG", "Reached EOF on file x")]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (errno.EADDRINUSE, "already in use"),
        (errno.EACCES, "ports below 1024 need root"),
        (errno.EPERM, "CAP_NET_RAW"),
        (errno.ENODEV, "no network interface named 'br9'"),
        (errno.EADDRNOTAVAIL, "not configured on this machine"),
        (errno.EMFILE, "cannot open UDP port 69 on 0.0.0.0: Too many open files"),
    ],
)
def test_start_errors_say_what_to_do(tmp_path, code, text):
    service = TftpService(tmp_path, port=69, interface="br9")
    exc = service._start_error(OSError(code, os.strerror(code)))
    assert text in str(exc)
    assert (exc.port, exc.address, exc.interface, exc.errno) == (69, "0.0.0.0", "br9", code)
