r"""The live environment's ``/init`` (busybox sh, PID 1), its shell functions and the udhcpc event script.

What /init does, in order: mount proc, sys, devtmpfs, devpts, /run, /tmp; load modules by ``modalias``
until no new device appears; find the NIC whose MAC is ``provision.mac=`` (else the first Ethernet with
carrier); DHCP with busybox udhcpc (it stays in the background to renew the lease); the server's key as the
only ``authorized_keys`` entry (baked in at build time), dropbear with a fresh Ed25519 host key, no
passwords; the marker ``PROVISION-LIVE-UP <seconds since kernel start> <ip>``; then ``python3 -m
provision.agent``. Exit 0: reboot; 3: power off; anything else: ``PROVISION-LIVE-AGENT-EXIT <code>``, SSH
stays up and a root shell runs on the console (and on tty1 when the console is a serial port). /init never
exits (that would be a kernel panic).

Data rules: the kernel command line and DHCP answers are data. They are read with ``read`` (never word
split by an unquoted expansion, never globbed), checked against strict patterns (``valid_mac``,
``valid_url``, ``valid_ipv4``, ``valid_ifname``) before any use, and only ever passed as one quoted
argument. There is no ``eval``, no ``sh -c`` and no command built from a string anywhere.

The functions live in ``/usr/lib/provision/live-functions.sh`` so tests can source them without booting.
"""

from __future__ import annotations

import re

INIT_PATH = "init"
FUNCTIONS_PATH = "usr/lib/provision/live-functions.sh"
UDHCPC_PATH = "usr/lib/provision/udhcpc.script"
AGENT_ROOT = "opt/provision"  # PYTHONPATH: /opt/provision/provision/agent/...

MARKER_UP = "PROVISION-LIVE-UP"
MARKER_AGENT_EXIT = "PROVISION-LIVE-AGENT-EXIT"
MARKER_NO_AGENT = "PROVISION-LIVE-NO-AGENT"
MARKER_NO_NETWORK = "PROVISION-LIVE-NO-NETWORK"
MARKER_REBOOT = "PROVISION-LIVE-REBOOT"
MARKER_POWEROFF = "PROVISION-LIVE-POWEROFF"
MARKER_SHELL = "PROVISION-LIVE-SHELL"
EXIT_REBOOT = 0
EXIT_POWEROFF = 3
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:~-]{0,99}$")

FUNCTIONS = r"""# provision live environment: shell functions of /init (sourced; busybox sh).
# Values from the kernel command line and from DHCP are data: checked here before any use.

# A progress line with the seconds since the kernel started.
say() {
    read -r now rest < /proc/uptime 2>/dev/null
    echo "provision-live: $* [${now:-?} s]"
}

# A marker line on the console, and on the screen too when the console is a serial port.
marker() {
    echo "$*"
    if [ -n "$SCREEN" ]; then echo "$*" > "$SCREEN" 2>/dev/null; fi
}

# The VT among the kernel's consoles that is not /dev/console (flag C), if any: /dev/tty0 or none.
find_screen() {
    SCREEN=""
    [ -r /proc/consoles ] || return 0
    while read -r name flags rest; do
        case "$name" in
            tty0|tty[1-9]|tty[1-9][0-9])
                case "$flags $rest" in
                    *C*) ;;
                    *) SCREEN=/dev/tty0 ;;
                esac
                ;;
        esac
    done < /proc/consoles
}

HEX2='[0-9a-f][0-9a-f]'
valid_mac() {
    case "$1" in
        $HEX2:$HEX2:$HEX2:$HEX2:$HEX2:$HEX2) return 0 ;;
    esac
    return 1
}

# http(s)://host[:port][/path] of letters, digits and . : / _ - only (at most 200 characters).
valid_url() {
    case "$1" in
        http://?*|https://?*) ;;
        *) return 1 ;;
    esac
    case "$1" in
        *[!A-Za-z0-9.:/_-]*) return 1 ;;
    esac
    [ "${#1}" -le 200 ]
}

valid_ipv4() {
    case "$1" in
        ''|*[!0-9.]*|.*|*.|*..*) return 1 ;;
    esac
    rest=$1
    count=0
    while [ -n "$rest" ]; do
        octet=${rest%%.*}
        case "$rest" in
            *.*) rest=${rest#*.} ;;
            *) rest="" ;;
        esac
        [ "${#octet}" -le 3 ] || return 1
        [ "$octet" -le 255 ] || return 1
        count=$((count + 1))
    done
    [ "$count" -eq 4 ]
}

valid_ifname() {
    case "$1" in
        ''|*[!A-Za-z0-9_.-]*) return 1 ;;
    esac
    [ "${#1}" -le 15 ]
}

# KERNEL_MAC and KERNEL_SERVER from provision.mac= / provision.server= of the command line file $1;
# a value that fails its pattern is dropped with a message (never used).
kernel_args() {
    KERNEL_MAC=""
    KERNEL_SERVER=""
    tr -s ' \t' '\n\n' < "$1" > /run/provision/cmdline.words 2>/dev/null || return 0
    while read -r word; do
        case "$word" in
            provision.mac=*)
                value=$(printf '%s\n' "${word#provision.mac=}" | tr 'A-F' 'a-f')
                if valid_mac "$value"; then KERNEL_MAC=$value; else say "ignoring a malformed provision.mac="; fi
                ;;
            provision.server=*)
                value=${word#provision.server=}
                if valid_url "$value"; then KERNEL_SERVER=$value; else say "ignoring a malformed provision.server="; fi
                ;;
        esac
    done < /run/provision/cmdline.words
}

mount_all() {
    mount -t proc -o nosuid,nodev,noexec proc /proc
    mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
    mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev 2>/dev/null
    mkdir -p /dev/pts /dev/shm /run /tmp
    mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
    mkdir -p /run/provision
    if [ -d /sys/firmware/efi ]; then
        modprobe -q efivarfs
        mount -t efivarfs -o nosuid,nodev,noexec efivarfs /sys/firmware/efi/efivars 2>/dev/null
    fi
}

# One pass: the drivers of the devices by their modalias, when the list changed since the last pass
# (NUL-separated: firmware strings in a DMI alias may hold quotes, which xargs would interpret).
# Returns 0 when the list was new.
MODALIASES=""
modalias_pass() {
    cat /sys/bus/*/devices/*/modalias 2>/dev/null | sort -u > /run/provision/modaliases
    current=$(md5sum < /run/provision/modaliases)
    [ "$current" = "$MODALIASES" ] && return 1
    MODALIASES=$current
    tr '\n' '\0' < /run/provision/modaliases | xargs -0 -r modprobe -q -a -b 2>/dev/null
    return 0
}

# Load drivers until no new device appears twice in a row (a PCI bus driver brings virtio devices, a SATA
# controller its disks, xhci the USB devices ...).
load_modules() {
    stable=0
    round=0
    while [ "$round" -lt 20 ] && [ "$stable" -lt 2 ]; do
        if modalias_pass; then stable=0; else stable=$((stable + 1)); fi
        round=$((round + 1))
        sleep 0.25
    done
    say "$(wc -l < /proc/modules) modules loaded"
}

is_ethernet() {
    [ "$(cat "/sys/class/net/$1/type" 2>/dev/null)" = 1 ] && [ -e "/sys/class/net/$1/device" ]
}

# IFACE: the interface with MAC $1, waiting for it to appear (up to ~20 s); else the first Ethernet
# interface with carrier (all are brought up to see it, up to ~15 s more).
find_iface() {
    IFACE=""
    tries=0
    while [ -n "$1" ] && [ "$tries" -lt 80 ]; do
        for dev in /sys/class/net/*; do
            name=${dev##*/}
            valid_ifname "$name" || continue
            if [ "$(cat "$dev/address" 2>/dev/null)" = "$1" ]; then IFACE=$name; return 0; fi
        done
        tries=$((tries + 1))
        sleep 0.25
        [ $((tries % 8)) -eq 0 ] && modalias_pass  # a late USB adapter or dock
    done
    [ -n "$1" ] && say "no interface has MAC $1: trying the first Ethernet interface with a link"
    tries=0
    while [ "$tries" -lt 60 ]; do
        for dev in /sys/class/net/*; do
            name=${dev##*/}
            valid_ifname "$name" && is_ethernet "$name" || continue
            ip link set dev "$name" up 2>/dev/null
            if [ "$(cat "$dev/carrier" 2>/dev/null)" = 1 ]; then IFACE=$name; return 0; fi
        done
        tries=$((tries + 1))
        sleep 0.25
        [ $((tries % 8)) -eq 0 ] && modalias_pass
    done
    return 1
}

# DHCP on $1 (udhcpc stays in the background and renews); LIVE_IP is the address it configured.
dhcp() {
    ip link set dev lo up
    ip link set dev "$1" up
    rm -f /run/provision/ip
    attempt=0
    while [ "$attempt" -lt 3 ]; do
        if busybox udhcpc -i "$1" -s /usr/lib/provision/udhcpc.script -t 6 -T 3 -A 3 -n \
                -p /run/udhcpc.pid -x hostname:provision-live; then
            read -r LIVE_IP < /run/provision/ip 2>/dev/null
            valid_ipv4 "$LIVE_IP" && return 0
        fi
        attempt=$((attempt + 1))
    done
    return 1
}

# dropbear: a fresh Ed25519 host key, root by key only (authorized_keys holds the server's key alone),
# no passwords (-s), no port forwarding (-j -k).
start_ssh() {
    mkdir -p /etc/dropbear
    chmod 0700 /root /root/.ssh 2>/dev/null
    key=/etc/dropbear/dropbear_ed25519_host_key
    [ -f "$key" ] || dropbearkey -t ed25519 -f "$key" > /dev/null 2>&1
    say "ssh host key $(dropbearkey -y -f "$key" 2>/dev/null | sed -n 's/^Fingerprint: //p')"
    dropbear -R -s -j -k -p 22 -r "$key" -P /run/dropbear.pid
}

uptime_seconds() {
    read -r up rest < /proc/uptime
    echo "$up"
}

shell_prog() {
    if [ -x /bin/bash ]; then echo /bin/bash; else echo /bin/sh; fi
}

# A root shell on the tty $1, started again whenever it ends.
shell_on_tty() {
    while :; do
        setsid -c "$(shell_prog)" -l < "$1" > "$1" 2>&1
        sleep 2
    done
}

# Never returns: SSH stays up, a shell on the console (and on tty1 when the console is serial).
rescue() {
    marker "PROVISION-LIVE-SHELL"
    if [ -n "$SCREEN" ] && [ -c /dev/tty1 ]; then
        shell_on_tty /dev/tty1 &
    fi
    while :; do
        setsid cttyhack "$(shell_prog)" -l
        sleep 2
    done
}
"""

INIT = r"""#!/usr/bin/busybox sh
# provision live environment /init (PID 1), kernel @RELEASE@, built @LABEL@.
# Functions and the data rules: /usr/lib/provision/live-functions.sh. This script never exits.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=linux LANG=C.UTF-8
umask 022
. /usr/lib/provision/live-functions.sh

mount_all
find_screen
say "started, kernel $(uname -r)"
hostname provision-live
kernel_args /proc/cmdline
[ -n "$KERNEL_SERVER" ] && say "server $KERNEL_SERVER"

load_modules

if ! find_iface "$KERNEL_MAC"; then
    marker "PROVISION-LIVE-NO-NETWORK no interface with a link"
    rescue
fi
if ! dhcp "$IFACE"; then
    marker "PROVISION-LIVE-NO-NETWORK no DHCP lease on $IFACE"
    rescue
fi
say "$IFACE $(cat "/sys/class/net/$IFACE/address") has $LIVE_IP"
start_ssh
marker "PROVISION-LIVE-UP $(uptime_seconds) $LIVE_IP"

if [ ! -f /opt/provision/provision/agent/__main__.py ]; then
    marker "PROVISION-LIVE-NO-AGENT provision.agent has no __main__ module in this build"
    rescue
fi
PYTHONPATH=/opt/provision PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 python3 -m provision.agent
code=$?
case "$code" in
    0)
        marker "PROVISION-LIVE-REBOOT"
        sync
        busybox reboot -f
        echo b > /proc/sysrq-trigger
        ;;
    3)
        marker "PROVISION-LIVE-POWEROFF"
        sync
        busybox poweroff -f
        echo o > /proc/sysrq-trigger
        ;;
    *)
        marker "PROVISION-LIVE-AGENT-EXIT $code"
        ;;
esac
rescue
"""

UDHCPC = r"""#!/usr/bin/busybox sh
# udhcpc event script of the provision live environment. Every value from the DHCP server is data:
# an address, router or name server is used only when it is a dotted quad, the prefix only when 0-32.
set -f
. /usr/lib/provision/live-functions.sh

valid_ifname "$interface" || exit 1
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set dev "$interface" up
        ;;
    bound|renew)
        if ! valid_ipv4 "$ip"; then
            say "udhcpc: refused a malformed address"
            exit 1
        fi
        prefix=${mask:-24}
        case "$prefix" in ''|*[!0-9]*) prefix=24 ;; esac
        [ "$prefix" -le 32 ] || prefix=24
        [ "$1" = bound ] && ip -4 addr flush dev "$interface"
        ip addr replace "$ip/$prefix" dev "$interface"
        for gw in $router; do
            if valid_ipv4 "$gw"; then
                ip route replace default via "$gw" dev "$interface"
                break
            fi
        done
        : > /run/provision/resolv.conf
        for ns in $dns; do
            valid_ipv4 "$ns" && echo "nameserver $ns" >> /run/provision/resolv.conf
        done
        cp /run/provision/resolv.conf /etc/resolv.conf
        echo "$ip" > /run/provision/ip
        say "udhcpc: $interface $ip/$prefix"
        ;;
esac
exit 0
"""


def render_init(release: str, label: str) -> str:
    """``/init`` for kernel ``release`` and build ``label`` (both checked: they end up in a comment)."""
    for what, value in (("release", release), ("label", label)):
        if not _LABEL.match(value):
            raise ValueError(f"bad {what} for /init: {value!r}")
    return INIT.replace("@RELEASE@", release).replace("@LABEL@", label)


def scripts(release: str, label: str) -> dict[str, tuple[str, int]]:
    """Every script of the live environment: path in the tree -> (text, mode)."""
    return {
        INIT_PATH: (render_init(release, label), 0o755),
        FUNCTIONS_PATH: (FUNCTIONS, 0o644),
        UDHCPC_PATH: (UDHCPC, 0o755),
    }
