"""The first-boot unit of Debian images: every cloned disk gets its own machine-id and SSH host keys.

The master image ships with an empty ``/etc/machine-id`` and no SSH host keys. On the first boot of a
written disk systemd makes up a machine-id (transient while / is read-only); ``provision-firstboot.service``
then commits it (or creates one), points D-Bus at it, generates new SSH host keys before ``ssh.service``
starts, and leaves ``/var/lib/provision/firstboot-done`` so it never runs again (and
``provision.builder.callback.FIRSTBOOT_RUN`` in /run, so the boot callback says ``firstboot``).
"""

from __future__ import annotations

from pathlib import Path

from provision.builder.callback import FIRSTBOOT_RUN, install_unit

UNIT_NAME = "provision-firstboot.service"
SCRIPT_PATH = "usr/local/sbin/provision-firstboot"
UNIT_PATH = f"etc/systemd/system/{UNIT_NAME}"
STAMP = "/var/lib/provision/firstboot-done"

SCRIPT = """#!/bin/sh
# provision: first boot of a cloned disk: a machine-id and SSH host keys of its own.
set -eu
if mountpoint -q /etc/machine-id; then
    systemd-machine-id-setup --commit
fi
if [ ! -s /etc/machine-id ] || grep -qx uninitialized /etc/machine-id; then
    rm -f /etc/machine-id
    systemd-machine-id-setup
fi
if [ -d /var/lib/dbus ]; then
    ln -sf /etc/machine-id /var/lib/dbus/machine-id
fi
if command -v ssh-keygen >/dev/null 2>&1; then
    rm -f /etc/ssh/ssh_host_*
    ssh-keygen -A
fi
mkdir -p /var/lib/provision "$(dirname @FIRSTBOOT_RUN@)"
: > @FIRSTBOOT_RUN@
date -u +%Y-%m-%dT%H:%M:%SZ > /var/lib/provision/firstboot-done
echo "provision-firstboot: machine-id $(cat /etc/machine-id), new SSH host keys"
""".replace("@FIRSTBOOT_RUN@", FIRSTBOOT_RUN)

UNIT = f"""[Unit]
Description=First boot of a cloned disk: new machine-id and SSH host keys
Documentation=file:///etc/provision/image.json
DefaultDependencies=no
ConditionPathExists=!{STAMP}
After=local-fs.target systemd-remount-fs.service systemd-machine-id-commit.service
Before=sysinit.target ssh.service systemd-networkd.service NetworkManager.service
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/{SCRIPT_PATH}

[Install]
WantedBy=sysinit.target
"""


def install_firstboot(root: Path) -> None:
    """Write the unit and its script into the root tree (``systemctl --root`` enables it)."""
    install_unit(root, SCRIPT_PATH, SCRIPT, UNIT_PATH, UNIT)


def reset_identity(root: Path) -> None:
    """Leave no machine identity in the master: empty machine-id, no SSH host keys, no D-Bus id."""
    (root / "etc" / "machine-id").write_text("", encoding="utf-8")
    dbus = root / "var" / "lib" / "dbus" / "machine-id"
    if dbus.exists() or dbus.is_symlink():
        dbus.unlink()
        dbus.symlink_to("/etc/machine-id")
    ssh = root / "etc" / "ssh"
    if ssh.is_dir():
        for key in ssh.glob("ssh_host_*"):
            key.unlink()
    for stale in ("var/lib/systemd/random-seed", "var/lib/provision/firstboot-done"):
        (root / stale).unlink(missing_ok=True)
