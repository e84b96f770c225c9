#!/usr/bin/busybox sh
# provision live environment /init (PID 1), kernel 6.1.0-99-amd64, built tree-0123456789ab.
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
