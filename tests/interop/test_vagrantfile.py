"""The Vagrantfile (docs/vagrant.md), checked without a hypervisor.

- Ruby's own syntax check (`ruby -c`).
- What it asks of Vagrant: the file is loaded by Ruby with a recorder in place of Vagrant
  (tests/support/vagrantfile_recorder.rb), and the recorded calls are checked: a server on the isolated imaging
  LAN at the address the tiny image calls back to, PROVISION_PCS box-less PCs that boot from the network then
  their disk, with no management network, the same LAN without DHCP or forwarding, machines brought up one
  after the other, and the wait for the images after the last PC only.
- `vagrant validate` with the vagrant-libvirt plugin (Debian packages vagrant and vagrant-libvirt): it runs
  offline and without libvirtd, and checks every provider setting's name.

Each part is skipped when its tool is missing (ruby, vagrant, the plugin).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.interop
VAGRANTFILE = REPO / "Vagrantfile"
RECORDER = REPO / "tests" / "support" / "vagrantfile_recorder.rb"
LAB_NETWORK = IPv4Network("198.18.0.0/24")
TIMEOUT = 120
needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing (Debian package ruby)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "VAGRANT_"))}
    return {**env, **extra}


def record(**env: str) -> dict[str, Any]:
    """The Vagrantfile's configuration calls, loaded with ``env`` (PROVISION_PCS ...)."""
    done = subprocess.run(
        ["ruby", str(RECORDER), str(VAGRANTFILE)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, env=_env(**env), cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def calls(recorded: Mapping[str, Any], machine: str, suffix: str) -> list[dict[str, Any]]:
    prefix = f"config.vm.define({machine})."
    return [c for c in recorded["calls"] if c["path"].startswith(prefix) and c["path"].endswith(suffix)]


def one(recorded: Mapping[str, Any], machine: str, suffix: str) -> dict[str, Any]:
    found = calls(recorded, machine, suffix)
    assert len(found) == 1, f"{machine}: {suffix} called {len(found)} times"
    return found[0]


def machines(recorded: Mapping[str, Any]) -> list[str]:
    return [c["args"][0] for c in recorded["calls"] if c["path"] == "config.vm.define"]


@needs_ruby
def test_ruby_syntax() -> None:
    done = subprocess.run(["ruby", "-c", str(VAGRANTFILE)], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "Syntax OK" in done.stdout


@needs_ruby
def test_server_on_the_isolated_lab_network_at_the_tiny_images_callback_address() -> None:
    recorded = record()
    assert machines(recorded)[0] == "server"
    assert recorded["env"]["VAGRANT_NO_PARALLEL"], "machines must come up one after the other, the server first"
    net = one(recorded, "server", ".vm.network")
    assert net["args"] == ["private_network"]
    kw = net["kwargs"]
    assert kw["libvirt__dhcp_enabled"] is False and kw["libvirt__forward_mode"] == "none"
    server, host = IPv4Address(kw["ip"]), IPv4Address(kw["libvirt__host_ip"])
    assert server in LAB_NETWORK and host in LAB_NETWORK and server != host
    callback = re.search(r"provision\.callback=http://([0-9.]+):", (REPO / "images" / "tiny.yaml").read_text())
    assert callback is not None and IPv4Address(callback[1]) == server
    provision = one(recorded, "server", ".vm.provision")
    assert provision["kwargs"]["path"] == "contrib/vagrant/server.sh"
    assert (REPO / provision["kwargs"]["path"]).is_file()
    assert provision["kwargs"]["args"] == [str(server)]
    assert one(recorded, "server", ".vm.synced_folder")["kwargs"]["type"] == "rsync"


@needs_ruby
@pytest.mark.parametrize(("pcs", "wait"), [(None, "1"), ("3", "1"), ("1", "0")])
def test_pcs_boot_from_the_network_on_the_same_lan_and_the_last_one_waits(pcs: str | None, wait: str) -> None:
    recorded = record(PROVISION_WAIT=wait, **({"PROVISION_PCS": pcs} if pcs else {}))
    count = int(pcs or 2)
    names = [f"pc{n}" for n in range(1, count + 1)]
    assert machines(recorded) == ["server", *names]
    lan = one(recorded, "server", ".vm.network")["kwargs"]
    macs = []
    for name in names:
        assert not [c for c in calls(recorded, name, ".vm.box=") if c["args"] != [None]], f"{name} has a box"
        net = one(recorded, name, ".vm.network")["kwargs"]
        for key in ("libvirt__network_name", "libvirt__dhcp_enabled", "libvirt__forward_mode"):
            assert net[key] == lan[key], f"{name}: {key}"
        macs.append(net["mac"])
        assert [c["args"] for c in calls(recorded, name, ".provider(libvirt).boot")] == [["network"], ["hd"]]
        assert one(recorded, name, ".provider(libvirt).mgmt_attach=")["args"] == [False]
        assert one(recorded, name, ".provider(libvirt).storage")["args"] == ["file"]
    assert len(set(macs)) == count
    waits = [c for c in recorded["calls"] if c["path"].endswith(".trigger.after(up).run=")]
    if wait == "0":
        assert not waits
    else:
        assert len(waits) == 1 and waits[0]["path"].startswith(f"config.vm.define({names[-1]}).")
        assert waits[0]["args"][0]["inline"].endswith(f"wait-imaged {' '.join(macs)}'")


@needs_ruby
def test_a_bad_pc_count_is_refused() -> None:
    done = subprocess.run(
        ["ruby", str(RECORDER), str(VAGRANTFILE)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, env=_env(PROVISION_PCS="0"), cwd=REPO,
    )  # fmt: skip
    assert done.returncode != 0
    assert "PROVISION_PCS must be between 1 and 50, not 0" in done.stderr


def _vagrant_libvirt(home: Path) -> str | None:
    """Why `vagrant validate` cannot run here, or None."""
    if shutil.which("vagrant") is None:
        return "vagrant missing (Debian package vagrant)"
    listed = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True, timeout=TIMEOUT,
                            env=_env(VAGRANT_HOME=str(home)), check=False)  # fmt: skip
    return None if "vagrant-libvirt" in listed.stdout else "the vagrant-libvirt plugin is missing"


def validate(tmp_path: Path, vagrantfile: str) -> subprocess.CompletedProcess[str]:
    """`vagrant validate` on a copy (its .vagrant/ and VAGRANT_HOME stay in tmp_path)."""
    work = tmp_path / "work"
    shutil.copytree(REPO / "contrib" / "vagrant", work / "contrib" / "vagrant")
    (work / "Vagrantfile").write_text(vagrantfile)
    env = _env(VAGRANT_HOME=str(tmp_path / "vagrant.d"), VAGRANT_DEFAULT_PROVIDER="libvirt")
    argv = ["vagrant", "validate", "--no-tty", "--no-color"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env, cwd=work)


def test_vagrant_validate_with_the_libvirt_provider(tmp_path: Path) -> None:
    if (why := _vagrant_libvirt(tmp_path / "vagrant.d")) is not None:
        pytest.skip(why)
    text = VAGRANTFILE.read_text()
    done = validate(tmp_path, text)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vagrantfile validated successfully" in done.stdout
    # the control: a libvirt setting that does not exist is refused, so the check reads the provider's settings
    broken = text.replace("lv.mgmt_attach = false", "lv.mgmt_attach = false\n        lv.no_such_setting = 1")
    assert broken != text
    done = validate(tmp_path / "broken", broken)
    assert done.returncode != 0
    assert "no_such_setting" in done.stdout + done.stderr


@pytest.mark.parametrize("script", ["server.sh", "wait-imaged"])
def test_the_lab_scripts_parse_and_are_executable(script: str) -> None:
    path = REPO / "contrib" / "vagrant" / script
    assert os.access(path, os.X_OK)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
