"""The initramfs toolkit's cpio newc writer (streaming and in memory), its header encoder and reader."""

from __future__ import annotations

import io
import stat

import pytest

from provision.errors import FatalError
from provision.initramfs import CpioError, CpioStream, CpioWriter, InitrdError, ModuleError, header, read_newc
from tests.support.initramfs import newc_entries, parse_newc


def test_header_layout():
    head = header("etc/x", ino=7, mode=0o100644, size=5, nlink=1, mtime=100, rdev=(0, 0))
    assert head.startswith(b"070701") and len(head) % 4 == 0
    assert head[6:14] == b"00000007" and head[14:22] == b"000081a4"
    assert head[22:30] == b"00000000" and head[30:38] == b"00000000"  # uid, gid: root
    assert head[110:116] == b"etc/x\0"


def test_stream_entries_parents_devices_links_and_trailer():
    sink = io.BytesIO()
    cpio = CpioStream(sink)
    cpio.file("etc/deep/file.txt", b"hello", 0o600, mtime=5)
    cpio.symlink("bin", "usr/bin")
    cpio.device("dev/console", "c", 5, 1, 0o600)
    cpio.directory("root", 0o700)
    cpio.close()
    cpio.close()  # once only
    data = sink.getvalue()
    assert cpio.size == len(data) and data.endswith(b"TRAILER!!!\0\0\0\0")
    found = newc_entries(data)
    assert list(found) == ["etc", "etc/deep", "etc/deep/file.txt", "bin", "dev", "dev/console", "root"]
    assert found["etc/deep/file.txt"][0] == stat.S_IFREG | 0o600 and found["etc/deep/file.txt"][3] == b"hello"
    assert found["etc"][0] == stat.S_IFDIR | 0o755
    assert found["bin"][0] == stat.S_IFLNK | 0o777 and found["bin"][3] == b"usr/bin"
    assert found["dev/console"][0] == stat.S_IFCHR | 0o600 and found["dev/console"][4] == (5, 1)
    assert found["root"][0] == stat.S_IFDIR | 0o700
    assert cpio.entries == 7 and cpio.file_bytes == 5


def test_stream_refuses_duplicates_names_under_symlinks_and_writes_after_close():
    cpio = CpioStream(io.BytesIO())
    cpio.file("a", b"")
    with pytest.raises(CpioError, match="duplicate"):
        cpio.file("a", b"")
    cpio.symlink("lib", "usr/lib")
    with pytest.raises(CpioError, match="parent lib is a symlink"):
        cpio.file("lib/modules/x.ko", b"")
    with pytest.raises(CpioError, match="device kind"):
        cpio.device("dev/x", "p", 1, 1)
    with pytest.raises(CpioError, match="empty"):
        cpio.file("/", b"")
    cpio.close()
    with pytest.raises(CpioError, match="closed"):
        cpio.file("b", b"")


def test_file_that_changes_size_is_refused(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    cpio = CpioStream(io.BytesIO())
    with pytest.raises(CpioError, match="changed size"):
        cpio.file_from("f", path, 3, 0o644)


def test_cpio_newc_entries_parents_devices_and_trailer():
    cpio = CpioWriter()
    cpio.add_file("etc/deep/file.txt", b"hello", 0o600)
    cpio.add_symlink("bin/sh", "/bin/busybox")
    cpio.add_char_device("dev/console", 5, 1)
    cpio.add_dir("proc")
    cpio.add_dir("proc")  # a directory twice is fine
    entries = parse_newc(cpio.getvalue())
    assert list(entries)[:3] == ["etc", "etc/deep", "etc/deep/file.txt"]
    mode, data, _ = entries["etc/deep/file.txt"]
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600 and data == b"hello"
    assert stat.S_ISLNK(entries["bin/sh"][0]) and entries["bin/sh"][1] == b"/bin/busybox"
    assert stat.S_ISCHR(entries["dev/console"][0]) and entries["dev/console"][2] == (5, 1)
    assert stat.S_ISDIR(entries["proc"][0])
    assert cpio.getvalue() == cpio.getvalue()  # trailer added once
    assert cpio.names() == {"etc", "etc/deep", "etc/deep/file.txt", "bin", "bin/sh", "dev", "dev/console", "proc"}


def test_cpio_duplicate_entry_is_refused():
    cpio = CpioWriter()
    cpio.add_file("a", b"1")
    with pytest.raises(InitrdError, match="duplicate initramfs entry a"):
        cpio.add_file("/a", b"2")
    with pytest.raises(CpioError, match="duplicate initramfs entry a"):
        cpio.add_dir("a")  # a file is not a folder


def test_in_memory_writer_is_the_stream_writer():
    memory = CpioWriter()
    memory.add_dir("usr/bin")
    memory.add_file("usr/bin/x", b"abc", 0o755)
    memory.add_symlink("bin", "usr/bin")
    memory.add_char_device("dev/null", 1, 3, 0o666)
    sink = io.BytesIO()
    stream = CpioStream(sink)
    stream.directory("usr/bin")
    stream.file("usr/bin/x", b"abc", 0o755)
    stream.symlink("bin", "usr/bin")
    stream.device("dev/null", "c", 1, 3, 0o666)
    stream.close()
    assert memory.getvalue() == sink.getvalue()


def test_read_newc_refuses_other_data():
    with pytest.raises(CpioError, match="bad newc magic at offset 0"):
        list(read_newc(b"070702" + b"0" * 200))


def test_errors_are_one_tree_of_fatal_errors():
    assert issubclass(CpioError, InitrdError) and issubclass(ModuleError, InitrdError)
    assert issubclass(InitrdError, FatalError) and not InitrdError.retryable
