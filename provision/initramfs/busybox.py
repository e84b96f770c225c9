"""Busybox pieces shared by the small busybox systems (the lab's test initramfs, the tiny image): the applet
list of a busybox binary and the udhcpc event script (busybox ships none)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

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


def busybox_applets(busybox: Path) -> list[str]:
    """The applet paths of a busybox binary (``busybox --list-full``); a minimal set if it cannot run."""
    try:
        done = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, timeout=30, check=True)
        applets = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot list busybox applets (%s): /init will run busybox --install", exc)
        applets = ["bin/sh"]
    return applets
