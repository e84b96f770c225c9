"""The two init scripts of the tiny image (busybox sh).

- ``INITRAMFS_INIT`` (``/init`` of the initramfs): load the disk, file system and NIC modules, find the root
  file system by the UUID of ``root=UUID=...``, mount it and ``switch_root`` to its ``/sbin/init``.
- ``ROOT_INIT`` (``/sbin/init`` of the root file system): on first boot (no
  ``/var/lib/provision/firstboot-done``) give the machine a new machine-id and print
  ``PROVISION-TINY-FIRSTBOOT <label>`` on ttyS0 and tty0 (later boots print ``PROVISION-TINY-BOOT``); then
  DHCP and POST ``{"event", "mac", "image", "label", "firmware", "secure_boot", "machine_id"}`` as JSON to
  the URL of ``provision.callback=`` on the kernel command line, with ``"secret"`` when the imaging agent
  wrote the run's first-boot credential to ``FIRSTBOOT_SECRET_PATH`` (hex only; a file that is missing,
  empty or not hex sends none); then power off.
- ``CALLBACK_BODY``: the part of ``ROOT_INIT`` that builds that JSON (``$body``) from shell variables, tested
  on its own with busybox.

Markers: ``PROVISION-TINY-CALLBACK-OK``, ``PROVISION-TINY-CALLBACK-FAILED <why>``,
``PROVISION-TINY-FAILED <why>`` (the initramfs could not mount the root), ``PROVISION-TINY-POWEROFF``.
"""

from __future__ import annotations

from provision.wire.api import FIRSTBOOT_SECRET_PATH

FIRSTBOOT_MARKER = "PROVISION-TINY-FIRSTBOOT"
BOOT_MARKER = "PROVISION-TINY-BOOT"
CALLBACK_OK = "PROVISION-TINY-CALLBACK-OK"
CALLBACK_FAILED = "PROVISION-TINY-CALLBACK-FAILED"
FAILED = "PROVISION-TINY-FAILED"
POWEROFF = "PROVISION-TINY-POWEROFF"
FIRSTBOOT_STAMP = "/var/lib/provision/firstboot-done"

INITRAMFS_INIT = r"""#!/bin/sh
# provision tiny image, initramfs: modules, find the root file system by UUID, switch_root.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

fail() {
    echo "PROVISION-TINY-FAILED $*"
    echo "PROVISION-TINY-FAILED $*" > /dev/tty0 2>/dev/null
    sleep 2
    poweroff -f
    echo o > /proc/sysrq-trigger
    while :; do sleep 60; done
}

while read -r mod; do
    [ -n "$mod" ] && insmod "$mod" 2>/dev/null
done < /etc/provision/modules

root=""
for word in $(cat /proc/cmdline); do
    case "$word" in root=UUID=*) root=${word#root=UUID=};; esac
done
[ -n "$root" ] || fail "no root=UUID= on the kernel command line"

dev=""
n=0
while [ -z "$dev" ] && [ "$n" -lt 100 ]; do
    dev=$(findfs "UUID=$root" 2>/dev/null)
    [ -n "$dev" ] || { sleep 0.1; n=$((n + 1)); }
done
[ -n "$dev" ] || fail "root file system UUID=$root not found (disk driver missing?)"

mkdir -p /newroot
mount -t ext4 -o rw "$dev" /newroot || fail "cannot mount $dev"
[ -x /newroot/sbin/init ] || fail "no /sbin/init on $dev"
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/init
"""

# The callback's JSON, from $event $mac $PROVISION_IMAGE $PROVISION_LABEL $firmware $secure_boot $machine_id,
# the first-boot secret in the file $secret_file when it holds hex digits only, and the host name in
# $hostname_file (/etc/hostname: the hostname hook's) when it is a plain host name.
CALLBACK_BODY = r"""secret=""
[ -r "$secret_file" ] && secret=$(cat "$secret_file" 2>/dev/null)
case "$secret" in *[!0-9a-f]*) secret="";; esac
body="{\"event\": \"$event\", \"mac\": \"$mac\", \"image\": \"$PROVISION_IMAGE\", \"label\": \"$PROVISION_LABEL\", "
body="$body\"firmware\": \"$firmware\", \"secure_boot\": $secure_boot, \"machine_id\": \"$machine_id\""
[ -z "$secret" ] || body="$body, \"secret\": \"$secret\""
hostname=$(head -n 1 "$hostname_file" 2>/dev/null)
case "$hostname" in *[!A-Za-z0-9.-]*) hostname="";; esac
[ -z "$hostname" ] || body="$body, \"hostname\": \"$hostname\""
body="$body}"
"""

_ROOT_INIT = r"""#!/bin/sh
# provision tiny image, /sbin/init: first-boot marker, new machine-id, callback, power off.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run 2>/dev/null
mount -t tmpfs tmpfs /tmp 2>/dev/null
. /etc/provision/image.env

say() {
    # both consoles: ttyS0 (the serial port tests read) and tty0 (the screen of a real PC)
    echo "$*" > /dev/ttyS0 2>/dev/null
    echo "$*" > /dev/tty0 2>/dev/null
}

finish() {
    say "PROVISION-TINY-POWEROFF"
    sync
    mount -o remount,ro / 2>/dev/null
    poweroff -f
    echo o > /proc/sysrq-trigger
    while :; do sleep 60; done
}

event=boot
if [ ! -e /var/lib/provision/firstboot-done ]; then
    event=firstboot
    tr -d '-' < /proc/sys/kernel/random/uuid > /etc/machine-id
    say "PROVISION-TINY-FIRSTBOOT $PROVISION_LABEL"
else
    say "PROVISION-TINY-BOOT $PROVISION_LABEL"
fi
mkdir -p /var/lib/provision
date > /var/lib/provision/firstboot-done 2>/dev/null || : > /var/lib/provision/firstboot-done
sync

callback=""
for word in $(cat /proc/cmdline); do
    case "$word" in provision.callback=*) callback=${word#provision.callback=};; esac
done
if [ -z "$callback" ]; then
    say "PROVISION-TINY-CALLBACK-FAILED no provision.callback= on the kernel command line"
    finish
fi

iface=""
n=0
while [ -z "$iface" ] && [ "$n" -lt 50 ]; do
    for dev in /sys/class/net/*; do
        name=${dev##*/}
        [ "$name" = lo ] || { iface=$name; break; }
    done
    [ -n "$iface" ] || { sleep 0.1; n=$((n + 1)); }
done
[ -n "$iface" ] || { say "PROVISION-TINY-CALLBACK-FAILED no network interface"; finish; }
mac=$(cat "/sys/class/net/$iface/address")
ip link set lo up
ip link set "$iface" up
udhcpc -i "$iface" -s /etc/udhcpc.script -n -q -t 6 -T 2 >/dev/null 2>&1 \
    || { say "PROVISION-TINY-CALLBACK-FAILED no DHCP lease on $iface"; finish; }

firmware=bios
[ -d /sys/firmware/efi ] && firmware=uefi
secure_boot=false
dmesg | grep -q "Secure boot enabled" && secure_boot=true
machine_id=$(cat /etc/machine-id)
secret_file=@SECRET_PATH@
hostname_file=/etc/hostname
@CALLBACK_BODY@
n=0
while [ "$n" -lt 3 ]; do
    # (busybox 1.35's wget -T crashes: bound it with timeout instead)
    if timeout 20 wget -q -O /tmp/reply --header "Content-Type: application/json" --post-data "$body" "$callback"
    then
        say "PROVISION-TINY-CALLBACK-OK $mac"
        finish
    fi
    n=$((n + 1))
    sleep 1
done
say "PROVISION-TINY-CALLBACK-FAILED POST $callback"
finish
"""
ROOT_INIT = _ROOT_INIT.replace("@SECRET_PATH@", FIRSTBOOT_SECRET_PATH).replace("@CALLBACK_BODY@\n", CALLBACK_BODY)
