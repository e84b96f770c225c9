"""The boot callback of Debian images: the installed system tells the imaging server it booted.

``provision-callback.service`` (enabled in every Debian image; it runs only when the kernel command line has
``provision.callback=URL``, after ``network-online.target`` and the first-boot unit) runs ``SCRIPT`` (POSIX sh:
dash in the image, only what a minbase system has, plus ``curl``), which POSTs the ``provision.wire.api.FirstBoot``
message as JSON to that URL:

- ``event``: ``firstboot`` when ``provision-firstboot.service`` ran in this boot (it leaves ``FIRSTBOOT_RUN``
  in /run), else ``boot``; ``image`` and ``label`` from ``/etc/provision/image.json`` (the builder's);
- ``mac``: the NIC of the default route, else of the first route (``/proc/net/route``, waited for up to 90 s);
  ``firmware``, ``secure_boot`` (the SecureBoot EFI variable); ``machine_id``: the new ``/etc/machine-id``;
- ``secret``: the run's first-boot credential the imaging agent wrote to ``FIRSTBOOT_SECRET_PATH``;
- ``hostname``: the first line of ``/etc/hostname`` (the hostname hook's); ``packages``: ``NAME=VERSION`` of
  every installed package (``dpkg-query``).

``CALLBACK_BODY`` builds that JSON from shell variables and files; every value is checked against a plain
character set before it is put between quotes (a value that does not fit is left out, or ``unknown``), nothing
is evaluated. ``tests/unit/test_debian_callback.py`` runs it under dash and busybox sh.

Markers on the console (the unit's output goes to the journal and the console, ttyS0 with ``boot.serial``):
``PROVISION-DEBIAN-CALLBACK-OK <mac>``, ``PROVISION-DEBIAN-CALLBACK-FAILED <why>``.
"""

from __future__ import annotations

from pathlib import Path

from provision.wire.api import FIRSTBOOT_SECRET_PATH

UNIT_NAME = "provision-callback.service"
SCRIPT_PATH = "usr/local/sbin/provision-callback"
UNIT_PATH = f"etc/systemd/system/{UNIT_NAME}"
FIRSTBOOT_RUN = "/run/provision/firstboot"  # left by the first-boot script: this boot is the first
CALLBACK_OK = "PROVISION-DEBIAN-CALLBACK-OK"
CALLBACK_FAILED = "PROVISION-DEBIAN-CALLBACK-FAILED"

# $body from $event $mac $image $label $firmware $secure_boot $machine_id, the files $secret_file (hex digits
# only), $hostname_file (a plain host name on its first line) and $packages_file (NAME=VERSION lines).
CALLBACK_BODY = r"""case "$event" in firstboot | boot) ;; *) event=boot ;; esac
case "$mac" in *[!0-9a-f:]*) mac="" ;; esac
case "$image" in '' | *[!A-Za-z0-9._-]*) image=unknown ;; esac
case "$label" in '' | *[!A-Za-z0-9._@-]*) label=unknown ;; esac
case "$firmware" in bios | uefi) ;; *) firmware=unknown ;; esac
case "$secure_boot" in true | false) ;; *) secure_boot=null ;; esac
case "$machine_id" in *[!0-9a-f]*) machine_id="" ;; esac
body="{\"event\": \"$event\", \"mac\": \"$mac\", \"image\": \"$image\", \"label\": \"$label\", "
body="$body\"firmware\": \"$firmware\", \"secure_boot\": $secure_boot"
[ -z "$machine_id" ] || body="$body, \"machine_id\": \"$machine_id\""
secret=""
[ -r "$secret_file" ] && secret=$(head -n 1 "$secret_file" 2>/dev/null)
case "$secret" in *[!0-9a-f]*) secret="" ;; esac
[ -z "$secret" ] || body="$body, \"secret\": \"$secret\""
hostname=""
[ -r "$hostname_file" ] && hostname=$(head -n 1 "$hostname_file" 2>/dev/null)
case "$hostname" in *[!A-Za-z0-9.-]*) hostname="" ;; esac
[ -z "$hostname" ] || body="$body, \"hostname\": \"$hostname\""
list=""
if [ -r "$packages_file" ]; then
    while IFS= read -r item; do
        case "$item" in '' | *[!A-Za-z0-9.+~:=-]* | [!a-z0-9]*) continue ;; esac
        list="$list${list:+, }\"$item\""
    done <"$packages_file"
fi
body="$body, \"packages\": [$list]}"
"""

# /proc/net/route -> the interface of the default route, else of the first route (lo left out)
ROUTE_AWK = (
    'NR > 1 && $1 != "lo" { if ($2 == "00000000") { print $1; found = 1; exit } if (first == "") first = $1 } '
    'END { if (!found && first != "") print first }'
)

_SCRIPT = r"""#!/bin/sh
# provision: report this boot to the imaging server, provision.callback= of the kernel command line
# (provision/builder/callback.py). Values are checked before they go into the JSON; nothing is evaluated.
set -u
export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
say() {
    echo "$*" # the unit's output: the journal and the console
}
failed() {
    say "@FAILED@ $*"
    exit 1
}

callback=""
set -f
for word in $(cat /proc/cmdline); do
    case "$word" in provision.callback=*) callback=${word#provision.callback=} ;; esac
done
set +f
[ -n "$callback" ] || failed "no provision.callback= on the kernel command line"
case "$callback" in
http://?* | https://?*) ;;
*) failed "provision.callback= is not an http:// or https:// URL" ;;
esac
case "$callback" in *[!A-Za-z0-9_.,:/=@+%~-]*) failed "provision.callback= holds characters a URL should not" ;; esac
command -v curl >/dev/null 2>&1 || failed "curl is not installed"

event=boot
[ -e @FIRSTBOOT_RUN@ ] && event=firstboot
image=$(sed -n 's/^ *"image": *"\([^"]*\)",\{0,1\} *$/\1/p' /etc/provision/image.json 2>/dev/null | head -n 1)
label=$(sed -n 's/^ *"label": *"\([^"]*\)",\{0,1\} *$/\1/p' /etc/provision/image.json 2>/dev/null | head -n 1)

# the NIC of the default route, else of the first route (an imaging LAN may have no router): DHCP by the
# image's network set-up, which network-online.target may not wait for
iface=""
n=0
while :; do
    iface=$(awk '@ROUTE_AWK@' /proc/net/route 2>/dev/null)
    [ -z "$iface" ] && [ "$n" -lt 90 ] || break
    sleep 1
    n=$((n + 1))
done
[ -n "$iface" ] || failed "no IPv4 route after $n s (no DHCP lease?)"
case "$iface" in *[!A-Za-z0-9_.-]*) failed "odd interface name" ;; esac
mac=$(cat "/sys/class/net/$iface/address" 2>/dev/null)

firmware=bios
secure_boot=false
if [ -d /sys/firmware/efi ]; then
    firmware=uefi
    var=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
    [ "$(od -An -t u1 -j 4 -N 1 "$var" 2>/dev/null | tr -d ' ')" = 1 ] && secure_boot=true
fi
machine_id=$(head -n 1 /etc/machine-id 2>/dev/null)
secret_file=@SECRET_PATH@
hostname_file=/etc/hostname
work=$(mktemp -d /run/provision-callback.XXXXXX) || failed "cannot make a folder in /run"
trap 'rm -rf "$work"' EXIT
packages_file=$work/packages
dpkg-query -W -f='${db:Status-Abbrev} ${Package}=${Version}\n' 2>/dev/null \
    | awk '$1 == "ii" { print $2 }' >"$packages_file"
@CALLBACK_BODY@
printf '%s' "$body" >"$work/body"

n=0
while [ "$n" -lt 5 ]; do
    status=0
    curl -fsS -o /dev/null --connect-timeout 10 --max-time 30 -H "Content-Type: application/json" \
        --data-binary "@$work/body" "$callback" 2>"$work/error" || status=$?
    if [ "$status" -eq 0 ]; then
        say "@OK@ $mac"
        exit 0
    fi
    n=$((n + 1))
    sleep 3
done
failed "POST $callback: curl exit $status: $(head -c 200 "$work/error" | tr -c '[:print:]' ' ')"
"""
SCRIPT = (
    _SCRIPT.replace("@CALLBACK_BODY@\n", CALLBACK_BODY)
    .replace("@SECRET_PATH@", FIRSTBOOT_SECRET_PATH)
    .replace("@FIRSTBOOT_RUN@", FIRSTBOOT_RUN)
    .replace("@ROUTE_AWK@", ROUTE_AWK)
    .replace("@OK@", CALLBACK_OK)
    .replace("@FAILED@", CALLBACK_FAILED)
)

UNIT = f"""[Unit]
Description=Report this boot to the imaging server (provision.callback= on the kernel command line)
Documentation=file:///etc/provision/image.json
ConditionKernelCommandLine=provision.callback
Wants=network-online.target
After=network-online.target provision-firstboot.service

[Service]
# exec, not oneshot: the boot never waits for a server that does not answer
Type=exec
ExecStart=/{SCRIPT_PATH}
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""


def install_unit(root: Path, script_path: str, script: str, unit_path: str, unit: str) -> None:
    """A boot unit and its script written into the root tree (``systemctl --root`` enables it)."""
    target = root / script_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(script, encoding="utf-8")
    target.chmod(0o755)
    unit_file = root / unit_path
    unit_file.parent.mkdir(parents=True, exist_ok=True)
    unit_file.write_text(unit, encoding="utf-8")


def install_callback(root: Path) -> None:
    """Write the unit and its script into the root tree (``systemctl --root`` enables it)."""
    install_unit(root, SCRIPT_PATH, SCRIPT, UNIT_PATH, UNIT)
