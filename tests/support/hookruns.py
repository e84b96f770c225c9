"""Whole runs with post-install hooks, through the real chain on 127.0.0.1 (tests/functional/test_hooks_run.py).

``provision serve`` (a process: ``tests.support.chunk_server.Server``) with a recipe whose plan has hooks and a
site hook folder (``hooks.dir``), its SSH port set to a real dropbear's (``hooks.ssh_port``); the dropbear
stands in for the live environment's sshd: its forced command is the real hook runner (this venv's python,
``-m provision.agent.hookrun``, PYTHONPATH the checkout) and, in its own mount namespace, a folder of the test
is ``/run/provision`` (where the agent records the disk it wrote, and where the runner mounts). The agent
(``run_agent``, in this process) writes the image to a sparse file standing in for the disk, reports, and
waits for the hooks; its hello reports the dropbear's host key.

- ``needs_live_chain``: the skip marks (root, dropbear, the mount tools, busybox-static in the .deb cache).
- ``build_image(folder)``: a 64 MiB GPT disk whose ext4 root is a tiny busybox system holding the files the
  built-in hooks edit (and Debian's useradd/usermod when this machine has them: ``has_useradd``), imported
  into an image store as ``educ``: (store folder, version, raw disk).
- ``SITE_HOOKS``: the test hooks (``envdump``, ``broken``, ``flaky``, ``slow``) written by ``site_hooks``.
- ``Chain``: the server, the dropbear, the image; ``token``/``runs``/``run``/``events``/``machine`` through
  the API; ``agent(mac, ...)`` a whole run; ``cli(*args)`` ``python -m provision`` on its state; the recipe
  (``recipe(hooks)``) written before the first hello; ``leftovers()``: what the runner left (mounts in the
  dropbear's namespace and here, folders, loop devices over the disks).
- ``chain(tmp_path, image, hooks)``: a Chain, everything stopped by PID afterwards.
- ``hostile_probe(folder, serial, transport)``: the sample probe with a DMI serial and a disk transport of
  the test's.
- ``debugfs_cat`` (re-exported): a file of a disk's root file system.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from provision.agent.client import ServerApi
from provision.agent.fetch import RetryPolicy
from provision.agent.main import HOOKS_POLL, AgentConfig, Outcome, run_agent
from provision.images import ImageStore, ImageVersion
from provision.sshkeys import ensure_server_key
from provision.wire.api import Report, RunAnswer
from tests.support.agent import MiB, make_ext4_disk
from tests.support.chunk_server import Server, free_port
from tests.support.dropbear import Dropbear, dropbear_missing
from tests.support.files import sparse_file, write_tree
from tests.support.hookrun import busybox_static, busybox_tree, debugfs_cat, loops_of, mounts_under
from tests.support.hooks import copy_program, hook_text
from tests.support.paths import REPO, SAMPLE_PROBE

__all__ = ["debugfs_cat"]

DISK = 64 * MiB
CHUNK = 1 * MiB
TOOLS = ("losetup", "mke2fs", "debugfs", "mount", "umount", "chroot", "unshare")
BUSYBOX = busybox_static()
QUICK = RetryPolicy(deadline=30, initial_delay=0.05, max_delay=0.5, connect_timeout=2, read_timeout=20)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mounts, loop devices, chroot, a mount namespace for dropbear)"
    if (why := dropbear_missing()) is not None:
        return why
    if absent := [t for t in TOOLS if shutil.which(t) is None]:
        return f"needs {', '.join(absent)}"
    if BUSYBOX is None:
        return "needs busybox-static in the .deb cache (tests/support/paths.py: scripts/setup, or any image build)"
    return None


needs_live_chain = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))

HOSTS = "127.0.0.1\tlocalhost\n127.0.1.1\tmaster.example\tmaster\n::1\tlocalhost ip6-localhost\n"
LOCALE_GEN = "# en_US.UTF-8 UTF-8\n# fr_FR.UTF-8 UTF-8\n"
KEYBOARD = 'XKBMODEL="pc105"\nXKBLAYOUT="us"\nXKBVARIANT=""\nXKBOPTIONS=""\n'
MACHINE_ID = "0123456789abcdef0123456789abcdef\n"
ROOT_FILES: dict[str, str | bytes] = {
    "etc/hostname": "master\n",
    "etc/hosts": HOSTS,
    "etc/machine-id": MACHINE_ID,
    "var/lib/dbus/machine-id": MACHINE_ID,
    "etc/ssh/ssh_host_ed25519_key": "private",
    "etc/ssh/ssh_host_ed25519_key.pub": "public",
    "etc/ssh/sshd_config": "PermitRootLogin no\n",
    "usr/sbin/sshd": "#!/bin/sh\n",
    "var/lib/systemd/random-seed": b"\x01" * 512,
    "etc/locale.gen": LOCALE_GEN,
    "usr/sbin/locale-gen": "#!/bin/sh\ncp /etc/locale.gen /etc/locale.generated\n",
    "etc/default/keyboard": KEYBOARD,
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\naudio:x:29:\nvideo:x:44:\nusers:x:100:\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\n",
    "etc/gshadow": "root:*::\naudio:*::\nvideo:*::\nusers:*::\n",
    "etc/skel/.profile": "# skel\n",
}
EXECUTABLE = ("usr/sbin/sshd", "usr/sbin/locale-gen")


def build_image(folder: Path) -> tuple[Path, ImageVersion, Path, bool]:
    """The busybox root disk imported as ``educ`` into ``folder/store``: (store folder, version, raw disk,
    whether useradd and usermod are in it)."""
    assert BUSYBOX is not None
    tree = busybox_tree(folder / "tree", BUSYBOX)
    write_tree(tree, ROOT_FILES)
    for path in EXECUTABLE:
        (tree / path).chmod(0o755)
    (tree / "etc/shadow").chmod(0o640)
    (tree / "etc/lightdm").mkdir()  # lightdm "installed": the account hook's autologin goes there
    useradd = copy_program(tree, "useradd") and copy_program(tree, "usermod")
    if Path("/etc/login.defs").is_file():
        shutil.copyfile("/etc/login.defs", tree / "etc/login.defs")
    raw, _ = make_ext4_disk(folder, {}, grow_to=DISK, tree=tree)
    store = folder / "store"
    version = ImageStore(store).import_raw(raw, "educ", chunk_size=CHUNK)
    return store, version, raw, useradd


# ------------------------------------------------------------------------------------------------ site hooks
SITE_HOOKS = {
    "envdump": (
        "description: writes what it received into /root of the target\nwhere: target\ntimeout: 30\n"
        "params:\n  label: {type: str, required: true}\n  transport: {type: str, default: ''}\nneeds: [serial]\n",
        'set -eu\nprintf %s "$PROVISION_PARAM_LABEL" >/root/label\nprintf %s "$PROVISION_PARAM_TRANSPORT" '
        '>/root/transport\nprintf %s "${PROVISION_FACT_SERIAL-unset}" >/root/serial\nenv >/root/env\n'
        'echo "envdump: $(ls /root | wc -l) files"\n',
    ),
    "broken": (
        "description: always fails\nwhere: target\ntimeout: 30\non_failure: fail\n",
        "echo 'checking /etc'\necho 'step 2 of 3'\necho 'broken: /etc/broken is missing' >&2\nexit 3\n",
    ),
    "flaky": (
        "description: fails, a warning only\nwhere: target\ntimeout: 30\non_failure: warn\n",
        "echo 'flaky: the portal did not answer' >&2\nexit 4\n",
    ),
    "slow": (
        "description: never ends by itself\nwhere: target\ntimeout: 30\non_failure: warn\n",
        "echo 'slow: starting'\nsleep 30\necho 'slow: never'\n",
    ),
}


def site_hooks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (header, body) in SITE_HOOKS.items():
        (folder / name).write_text(hook_text(name, header, body))
        (folder / name).chmod(0o755)
    return folder


def hostile_probe(folder: Path, serial: str, transport: str) -> Path:
    """The sample probe (a QEMU PC) with a DMI table whose system serial is ``serial`` and a ``tran`` of
    ``transport`` on its disk vda (both strings reach recipes as the facts ``serial`` and ``disk_transport``)."""
    shutil.copytree(SAMPLE_PROBE, folder)
    (folder / "dmidecode.txt").write_text(
        "# dmidecode 3.4\nGetting SMBIOS data from sysfs.\nSMBIOS 2.8 present.\n\n"
        "Handle 0x0100, DMI type 1, 27 bytes\nSystem Information\n\tManufacturer: QEMU\n"
        f"\tProduct Name: Standard PC\n\tVersion: pc-1.0\n\tSerial Number: {serial}\n\n"
    )
    lsblk = json.loads((folder / "lsblk.json").read_text())
    for device in lsblk["blockdevices"]:
        if device["name"] == "vda":
            device["tran"] = transport
    (folder / "lsblk.json").write_text(json.dumps(lsblk))
    return folder


# --------------------------------------------------------------------------------------------------- chain
class _ActingApi(ServerApi):
    """The agent's API client, doing ``before_report`` just before the report (a fault at the right moment)."""

    def __init__(self, *args: Any, before_report: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_report = before_report

    def report(self, run: str, report: Report) -> RunAnswer:
        self.before_report()
        return super().report(run, report)


QUICK_POLL = 0.2  # the agent asks about its run every 0.2 s instead of 5 s (HOOKS_POLL)
HOOKS_DEADLINE = 120 * HOOKS_POLL / QUICK_POLL  # the agent counts HOOKS_POLL per poll: 120 s of real time


def _quick_sleep(seconds: float) -> None:
    time.sleep(min(seconds, QUICK_POLL))


@dataclass
class Chain:
    tmp: Path
    server: Server
    live: Dropbear
    live_run: Path  # the live environment's /run/provision, seen from here
    version: ImageVersion
    hooks_dir: Path
    disks: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def state(self) -> Path:
        return self.server.state_dir

    @property
    def config(self) -> Path:
        return self.tmp / "provision.yaml"

    def recipe(self, hooks: Sequence[dict[str, Any]], *, name: str = "default") -> None:
        recipe = {"name": name, "default": True, "image": "educ", "wipe": "zero", "grow_root": False,
                  "hooks": list(hooks)}  # fmt: skip
        (self.tmp / "recipes" / "default.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True))

    def token(self, mac: str) -> str:
        script = requests.get(f"{self.url}/boot/{mac}.ipxe", timeout=10).text
        assert "provision.token=" in script, script
        return script.split("provision.token=")[1].split()[0]

    def agent(
        self,
        mac: str,
        *,
        probe: Path = SAMPLE_PROBE,
        host_key: Path | None = None,
        before_report: Callable[[], None] | None = None,
    ) -> tuple[Outcome, Path]:
        """One whole run of ``mac`` onto a fresh sparse file (its disk): (the agent's outcome, the disk)."""
        folder = self.tmp / "pc" / f"{len(self.disks)}-{mac.replace(':', '-')}"
        folder.mkdir(parents=True)
        disk = sparse_file(folder / "vda", DISK)
        self.disks.append(disk)
        cfg = AgentConfig(
            server=self.url, mac=mac, token=self.token(mac), probe_dir=probe, disks_from=folder, once=True,
            hello_deadline=60, retry=QUICK, target_record=self.live_run / "target",
            host_key_file=host_key or self.live.host_key, hooks_deadline=HOOKS_DEADLINE,
        )  # fmt: skip
        api = None
        if before_report is not None:
            api = _ActingApi(cfg.server, mac, cfg.token, deadline=60, sleep=_quick_sleep, before_report=before_report)
        started = time.monotonic()
        outcome = run_agent(cfg, sleep=_quick_sleep, **({"api": api} if api else {}))
        print(f"\n{mac}: {outcome.state} in {time.monotonic() - started:.1f} s: {outcome.reason}")
        return outcome, disk

    def runs(self, mac: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = requests.get(f"{self.url}/api/v1/runs", params={"mac": mac}, timeout=10).json()
        return runs

    def run(self, run_id: str) -> dict[str, Any]:
        answer = requests.get(f"{self.url}/api/v1/runs/{run_id}", timeout=10)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def events(self, mac: str, kind: str) -> list[dict[str, Any]]:
        events = requests.get(f"{self.url}/api/v1/machines/{mac}/events", timeout=10).json()
        return [e["detail"] for e in events if e["kind"] == kind]

    def machine(self, mac: str) -> dict[str, Any]:
        [machine] = [m for m in requests.get(f"{self.url}/api/v1/machines", timeout=10).json() if m["mac"] == mac]
        return dict(machine)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m provision ARGS`` (add ``--config`` or ``--state-dir`` yourself)."""
        return subprocess.run(
            [sys.executable, "-m", "provision", *args], capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
        )  # fmt: skip

    def namespace_mounts(self) -> list[str]:
        """Mount points under /run/provision in the dropbear's mount namespace (the live environment's view),
        but the test's folder bound there; [] once the dropbear is gone."""
        try:
            table = Path(f"/proc/{self.live.proc.pid}/mounts").read_text()
        except OSError:
            return []
        points = [line.split(" ")[1].replace("\\040", " ") for line in table.splitlines()]
        return [p for p in points if p.startswith("/run/provision/")]

    def leftovers(self) -> list[str]:
        """What the hook runner left: mounts (in the live environment's namespace and here), its folders, loop
        devices over the disks written."""
        left = [f"mount {p}" for p in self.namespace_mounts()]
        left += [f"mount {p}" for p in mounts_under("/run/provision") + mounts_under(str(self.tmp))]
        left += [f"folder {p}" for p in self.live_run.glob("hook-*")]
        left += [f"loop {loops_of(d)}" for d in self.disks if loops_of(d)]
        return left


RUNNER = [sys.executable, "-m", "provision.agent.hookrun"]


@contextmanager
def chain(tmp_path: Path, store: Path, version: ImageVersion) -> Iterator[Chain]:
    """``provision serve`` over the image store ``store`` with the site hooks, a dropbear running the real hook
    runner (its port is the server's ``hooks.ssh_port``), the server's SSH key trusted by it. Stopped by PID."""
    state = tmp_path / "state"
    key = ensure_server_key(state)
    live_run = tmp_path / "live-run"
    live_run.mkdir(mode=0o755)
    command = ["env", f"PYTHONPATH={REPO}", "PYTHONDONTWRITEBYTECODE=1", *RUNNER]
    live = Dropbear(tmp_path / "live", key.public_line, command, binds=[(live_run, "/run/provision")])
    hooks_dir = site_hooks(tmp_path / "site-hooks")
    (tmp_path / "recipes").mkdir()
    config = f"state_dir: {state}\nhooks:\n  dir: {hooks_dir}\n  ssh_port: {live.port}\n"
    server = Server(tmp_path, free_port(), recipes=tmp_path / "recipes", image_store=store, config=config)
    found = Chain(tmp_path, server, live, live_run, version, hooks_dir)
    try:
        server.start()
        yield found
    finally:
        server.kill()
        live.stop()
