"""The lab's test initramfs: busybox-static, the lab PCs' NIC and disk modules and an ``/init`` that calls home.

Laid out by the initramfs toolkit's ``busybox_initramfs`` (``provision.initramfs``, the layout the tiny image's
initramfs shares: busybox, the modules in load order, the udhcpc script, ``/init``), gzip-compressed,
reproducible (mtime 0).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from provision.initramfs import busybox_initramfs

log = logging.getLogger(__name__)

TEST_INITRD_DIRS = ("dev", "proc", "sys", "tmp", "run", "etc", "root", "mnt", "bin", "sbin", "usr/bin", "usr/sbin")

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


def modules_for(nic: str = "virtio", disk: str = "virtio") -> list[str]:
    """The root module names for a NIC and disk model of the lab (see NIC_MODULES, DISK_MODULES)."""
    names: list[str] = []
    for name in (*NIC_MODULES[nic], *DISK_MODULES[disk]):
        if name not in names:
            names.append(name)
    return names


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
    built = busybox_initramfs(
        kernel_modules, busybox, modules, init_script, dirs=TEST_INITRD_DIRS, extra_files=extra_files
    )
    order = built.modules
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(built.archive)
    tmp.replace(out)
    log.info("initramfs %s: %d modules (%s), %d bytes", out, len(order), " ".join(order), out.stat().st_size)
    return order
