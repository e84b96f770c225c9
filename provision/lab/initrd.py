"""A small test initramfs: busybox-static, a few kernel modules and an ``/init`` that calls home.

The cpio (newc) archive is written here in Python, gzip-compressed, reproducible (mtime 0). Kernel
module dependencies come from ``modules.dep`` when the kernel tree has one; a kernel unpacked with
``dpkg -x`` has none (depmod runs at install time), so they are then read from each module's ELF
``.modinfo`` section (``depends=``), which is what depmod would use too.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import re
import stat
import struct
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from provision.errors import FatalError

log = logging.getLogger(__name__)

# Load order per driver family (dependencies are added automatically, these are the roots).
NIC_MODULES: Mapping[str, tuple[str, ...]] = {
    "virtio": ("virtio_pci", "virtio_net"),
    "e1000": ("e1000",),
    "e1000e": ("e1000e",),
}
DISK_MODULES: Mapping[str, tuple[str, ...]] = {
    "virtio": ("virtio_pci", "virtio_blk"),
    "ahci": ("ahci", "sd_mod"),
    "nvme": ("nvme",),
}
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


class InitrdError(FatalError):
    """The test initramfs cannot be built (missing module, unreadable file)."""


def modules_for(nic: str = "virtio", disk: str = "virtio") -> list[str]:
    """The root module names for a NIC and disk model of the lab (see NIC_MODULES, DISK_MODULES)."""
    names: list[str] = []
    for name in (*NIC_MODULES[nic], *DISK_MODULES[disk]):
        if name not in names:
            names.append(name)
    return names


# --- cpio newc ------------------------------------------------------------------------------------


class CpioWriter:
    """Builds a cpio "newc" archive in memory; parent directories are added automatically."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._ino = 0
        self._dirs: set[str] = {""}
        self._names: set[str] = set()
        self._closed = False

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if name in self._names:
            raise InitrdError(f"duplicate initramfs entry {name}", path=name)
        self._parents(name)
        self._names.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
        self._chunks += [header, encoded, _pad(len(header) + len(encoded)), data, _pad(len(data))]

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in self._dirs:
                self._dirs.add(parent)
                self._entry(parent, stat.S_IFDIR | 0o755)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        name = name.strip("/")
        if name not in self._dirs:
            self._dirs.add(name)
            self._entry(name, stat.S_IFDIR | mode)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def names(self) -> set[str]:
        return set(self._names)

    def getvalue(self) -> bytes:
        """The archive bytes, with its trailer."""
        if not self._closed:
            encoded = b"TRAILER!!!\0"
            fields = (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(encoded), 0)
            header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
            self._chunks += [header, encoded, _pad(len(header) + len(encoded))]
            self._closed = True
        return b"".join(self._chunks)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


# --- kernel modules -------------------------------------------------------------------------------


def module_name(path: str) -> str:
    """``kernel/drivers/net/virtio_net.ko.xz`` -> ``virtio_net`` ('-' and '_' are the same to the kernel)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def read_module(path: Path) -> bytes:
    """A module file's ELF bytes, decompressed (insmod cannot load .ko.xz)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise InitrdError(f"{path}: zstd-compressed modules are not supported", path=str(path))
    return data


def modinfo(elf: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` key=value strings of a module's ELF image (64-bit little-endian)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise InitrdError("not a 64-bit little-endian ELF module")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", elf, shoff + index * shentsize)
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    info: dict[str, list[str]] = {}
    for index in range(shnum):
        name_off, offset, size = section(index)
        end = elf.index(b"\0", str_off + name_off)
        if elf[str_off + name_off : end] != b".modinfo":
            continue
        for item in elf[offset : offset + size].split(b"\0"):
            key, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep:
                info.setdefault(key, []).append(value)
    return info


class ModuleTree:
    """The modules of one kernel release (``/lib/modules/<release>``) and their dependencies."""

    def __init__(self, root: Path) -> None:
        if not (root / "kernel").is_dir():
            raise InitrdError(f"{root}: not a kernel modules directory (no kernel/)", path=str(root))
        self.root = root
        self.release = root.name
        self.paths: dict[str, str] = {}  # name -> path relative to root
        self._deps: dict[str, list[str]] = {}
        dep_file = root / "modules.dep"
        if dep_file.is_file():
            for line in dep_file.read_text(encoding="utf-8").splitlines():
                rel, _, deps = line.partition(":")
                if rel.strip():
                    self.paths[module_name(rel)] = rel.strip()
                    self._deps[module_name(rel)] = [module_name(d) for d in deps.split()]
        else:
            for path in sorted((root / "kernel").rglob("*.ko*")):
                if path.name.endswith(MODULE_SUFFIXES):
                    self.paths[module_name(path.name)] = path.relative_to(root).as_posix()
        builtin = root / "modules.builtin"
        text = builtin.read_text(encoding="utf-8") if builtin.is_file() else ""
        self.builtin = {module_name(line) for line in text.split()}

    def depends(self, name: str) -> list[str]:
        """Direct dependencies of module ``name``."""
        if name not in self._deps:
            info = modinfo(read_module(self.root / self.paths[name]))
            deps = [d for value in info.get("depends", []) for d in value.split(",") if d]
            self._deps[name] = [module_name(d) for d in deps]
        return self._deps[name]

    def load_order(self, names: Sequence[str]) -> list[str]:
        """``names`` and their dependencies, each after what it needs; built-in modules are left out."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(raw: str, wanted_by: str | None) -> None:
            name = module_name(raw)
            if name in order or name in visiting:
                return
            if name not in self.paths:
                if name in self.builtin:
                    log.debug("module %s is built into %s", name, self.release)
                    return
                needed = f" (needed by {wanted_by})" if wanted_by else ""
                raise InitrdError(
                    f"kernel module {name}{needed} not found in {self.root}", module=name, path=str(self.root)
                )
            visiting.add(name)
            for dep in self.depends(name):
                visit(dep, name)
            visiting.discard(name)
            order.append(name)

        for raw in names:
            visit(raw, None)
        return order


# --- /init ----------------------------------------------------------------------------------------

UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc event script: configure the interface from the lease (busybox has no default one here).
case "$1" in
deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for gw in $router; do ip route add default via "$gw" dev "$interface"; break; done
    : > /etc/resolv.conf
    for ns in $dns; do echo "nameserver $ns" >> /etc/resolv.conf; done
    echo "udhcpc: $interface $ip/${mask:-24} server ${serverid:-?}"
    ;;
esac
exit 0
"""

TEST_INIT = r"""#!/bin/sh
# provision test live environment: DHCP, POST /api/v1/hello, print a marker, power off.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
[ -x /bin/mount ] || /bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "provision-test-init: started, kernel $(uname -r)"

finish() {
    echo "$1"
    sync
    poweroff -f
    echo o > /proc/sysrq-trigger
    while :; do sleep 60; done
}

while read -r mod; do
    [ -n "$mod" ] && { insmod "$mod" || echo "provision-test-init: insmod $mod failed"; }
done < /etc/provision/modules

arg() {
    for word in $(cat /proc/cmdline); do
        case "$word" in "$1="*) echo "${word#*=}"; return;; esac
    done
}
server=$(arg provision.server)
token=$(arg provision.token)
mac=$(arg provision.mac)

iface=""
tries=0
while [ -z "$iface" ] && [ "$tries" -lt 50 ]; do
    for dev in /sys/class/net/*; do
        name=${dev##*/}
        [ "$name" = lo ] || { iface=$name; break; }
    done
    [ -n "$iface" ] || { sleep 0.1; tries=$((tries + 1)); }
done
[ -n "$iface" ] || finish "PROVISION-CALLBACK-FAILED no network interface"
[ -n "$mac" ] || mac=$(cat "/sys/class/net/$iface/address")

ip link set lo up
ip link set "$iface" up
udhcpc -i "$iface" -s /etc/udhcpc.script -n -q -t 10 -T 2 || finish "PROVISION-CALLBACK-FAILED no DHCP lease"

firmware=bios
[ -d /sys/firmware/efi ] && firmware=uefi
secure_boot=false
dmesg | grep -q "Secure boot enabled" && secure_boot=true
clean() { echo "$1" | tr -d '"\\'; }
body="{\"mac\": \"$(clean "$mac")\", \"token\": \"$(clean "$token")\", "
body="$body\"boot\": {\"firmware\": \"$firmware\", \"secure_boot\": $secure_boot, "
body="$body\"kernel\": \"$(uname -r)\"}}"
echo "provision-test-init: POST $server/api/v1/hello $body"

[ -n "$server" ] || finish "PROVISION-CALLBACK-FAILED no provision.server= on the kernel command line"
# (busybox 1.35 wget -T segfaults: bound it with timeout instead)
n=0
while [ "$n" -lt 3 ]; do
    if timeout 20 wget -q -O /tmp/reply --header "Content-Type: application/json" \
            --post-data "$body" "$server/api/v1/hello"; then
        finish "PROVISION-CALLBACK-OK"
    fi
    n=$((n + 1))
    sleep 1
done
finish "PROVISION-CALLBACK-FAILED POST $server/api/v1/hello"
"""


def busybox_applets(busybox: Path) -> list[str]:
    """The applet paths of a busybox binary (``busybox --list-full``); a minimal set if it cannot run."""
    try:
        done = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, timeout=30, check=True)
        applets = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot list busybox applets (%s): /init will run busybox --install", exc)
        applets = ["bin/sh"]
    return applets


def build_test_initrd(
    out: Path,
    kernel_modules: Path,
    busybox: Path,
    modules: Sequence[str],
    init_script: str = TEST_INIT,
    *,
    extra_files: Mapping[str, bytes] | None = None,
) -> list[str]:
    """Write a gzip cpio initramfs to ``out``; returns the module load order it contains.

    ``kernel_modules`` is ``/lib/modules/<release>`` of an unpacked kernel, ``busybox`` a static busybox.
    ``modules`` are root module names; their dependencies are added before them. ``/init`` is
    ``init_script``; ``/etc/provision/modules`` lists the module files in load order.
    """
    tree = ModuleTree(kernel_modules)
    order = tree.load_order(modules)
    cpio = CpioWriter()
    for name in ("dev", "proc", "sys", "tmp", "run", "etc", "root", "mnt", "bin", "sbin", "usr/bin", "usr/sbin"):
        cpio.add_dir(name)
    cpio.add_char_device("dev/console", 5, 1)
    cpio.add_char_device("dev/null", 1, 3, 0o666)
    cpio.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        if applet.strip("/") != "bin/busybox":
            cpio.add_symlink(applet, "/bin/busybox")
    listed: list[str] = []
    for name in order:
        rel = tree.paths[name]
        plain = re.sub(r"\.(xz|gz)$", "", rel)
        target = f"lib/modules/{tree.release}/{plain}"
        cpio.add_file(target, read_module(kernel_modules / rel))
        listed.append("/" + target)
    cpio.add_file("etc/provision/modules", "".join(f"{path}\n" for path in listed).encode())
    cpio.add_file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    cpio.add_file("init", init_script.encode(), 0o755)
    for name, data in (extra_files or {}).items():
        cpio.add_file(name, data, 0o755 if data.startswith(b"#!") else 0o644)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(cpio.getvalue())
    tmp.replace(out)
    log.info("initramfs %s: %d modules (%s), %d bytes", out, len(order), " ".join(order), out.stat().st_size)
    return order
