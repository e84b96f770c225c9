"""A rack of four QEMU PCs imaged at once from one multicast carousel, every disk verified (issue 16).

- The PCs: SeaBIOS + Debian 13's iPXE ROM, a blank virtio disk of the image's own size (128 MiB), powered on
  together on the lab bridge; ``provision serve`` (full DHCP) runs in the lab namespace on that bridge
  (``--interface br0 --address 198.18.0.1``), so the carousel's sender is bound to the bridge and sends from
  the lab address, TTL 1.
- The recipe says ``transfer: multicast``: each PC's plan carries the tiny image's carousel. In the live
  environment each agent joins the group (IGMP on its NIC), takes its chunks from the datagrams, repairs what
  it missed by HTTP range, writes, verifies, reports and reboots (QEMU runs with -no-reboot: the PC is off).
- On the host: every run is ``done`` with a complete verification; each run's transfer report says
  ``multicast`` with bytes taken from the carousel; the four together fetched by HTTP less than one copy of
  the image's stored bytes (HTTP alone would move four); the disks' chunks are the export's, but in the root
  file system (the agent writes the run's first-boot secret there); the server's log shows one carousel sent
  on the bridge (no interface or address refused), four joins, no error.

The lab bridge is a Linux bridge with multicast snooping on and no IGMP querier: it then floods the group to
every port (the kernel forwards by its snooped table only once a querier is seen), which is what a small
unmanaged switch does. Needs root, qemu-system-x86, mmdebstrap and the Debian archive (live environment, boot
files and the tiny image; cached under /var/cache/provision). Times: docs/lab.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provision.bootfiles import BootRoot
from provision.images.index import ImageVersion
from provision.lab import PC, Lab
from tests.support.e2e import IMAGING_STEPS, BootWatch, ProvisionServe, Timing, provision_config, require_lab
from tests.support.live import LiveEnv
from tests.support.sites import chunk_mismatches, live_boot_root, only_run, root_chunks, tiny_export

pytestmark = pytest.mark.e2e

MACS = {f"rack{n}": f"52:54:00:16:20:0{n}" for n in range(1, 5)}
MiB = 1 << 20
DISK_SIZE = 128 * MiB  # the tiny image's own size: nothing outside it to wipe
MEMORY = 512  # MiB: the live environment unpacks ~116 MiB in RAM; the agent holds at most 64 MiB of frames
RATE = 500_000  # bytes/s: a pass of the tiny image (~14.7 MB stored) in ~30 s, which 4 TCG guests keep up with
IMAGING_TIMEOUT = 900.0  # PXE -> live -> join, write, verify -> reboot, four PCs at once under TCG
FAIL = r"Kernel panic|Out of memory|PROVISION-LIVE-AGENT-EXIT|PROVISION-AGENT-RESULT (?!done)|No bootable device"
RECIPE = "name: rack\nmatch:\n  firmware: bios\nimage: tiny\ntransfer: multicast\nwipe: zero\ngrow_root: false\n"


@dataclass
class Site:
    lab: Lab
    server: ProvisionServe
    version: ImageVersion
    stored_bytes: int  # the version's distinct chunks as stored (zstd frames): one PC's bytes by HTTP alone
    export_raw: Path
    pcs: dict[str, PC]
    watches: dict[str, BootWatch]


@pytest.fixture(scope="module")
def site(
    netboot_root: BootRoot, trixie_rom: Path, live_env: LiveEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    require_lab("bios")
    tmp = tmp_path_factory.mktemp("multicast")
    root = live_boot_root(netboot_root, live_env, tmp / "boot")
    tiny = tiny_export(tmp)
    recipes = tmp / "recipes"
    recipes.mkdir()
    (recipes / "rack.yaml").write_text(RECIPE)
    with Lab(workdir=tmp / "lab") as lab:
        config = {
            **provision_config(lab),
            "image_store": str(tiny.store.root),
            "recipes_dir": str(recipes),
            "multicast": {"rate": RATE},
        }
        server = ProvisionServe.start(lab, root, config, dhcp="full")
        pcs = {
            mac: lab.add_pc(name, firmware="bios", mac=mac, rom=trixie_rom, disk_size=DISK_SIZE, memory=MEMORY)
            for name, mac in MACS.items()
        }
        watches = {
            mac: BootWatch(pc, IMAGING_STEPS, IMAGING_TIMEOUT, FAIL, exit_timeout=120) for mac, pc in pcs.items()
        }
        version = tiny.built.version
        yield Site(lab, server, version, tiny.store.stored_bytes(version), tiny.export_raw, pcs, watches)
        for pc in lab.pcs:
            pc.stop()


def transfers(site: Site) -> dict[str, dict[str, Any]]:
    """Each PC's transfer report once every PC is off; the test is skipped unless every run is done."""
    for watch in site.watches.values():
        watch.result()
    runs = {mac: only_run(site.server, mac) for mac in site.pcs}
    if any(run["state"] != "done" for run in runs.values()):
        pytest.skip("not every run is done (see test_imaged_from_the_carousel_and_verified)")
    return {mac: dict(run["transfer"]) for mac, run in runs.items()}


@pytest.mark.parametrize("mac", list(MACS.values()), ids=list(MACS))
def test_imaged_from_the_carousel_and_verified(site: Site, mac: str, timing: Timing) -> None:
    pc = site.pcs[mac]
    watch = site.watches[mac]
    watch.result(timing, f"{pc.name}:")
    assert watch.exit_code == 0, pc.tail(40)
    run = only_run(site.server, mac)
    assert (run["state"], run["digest"], run["image"]) == ("done", site.version.digest, "tiny"), run
    [verification] = run["verifications"]
    assert verification["complete"] and verification["read_back"] == "ok", verification
    transfer = run["transfer"]
    assert transfer is not None and transfer["mode"] == "multicast", run
    assert transfer["bytes_multicast"] > 0 and transfer["chunks_multicast"] > 0, transfer
    bad = chunk_mismatches(pc.disk_path, site.export_raw, site.version)
    assert set(bad) <= root_chunks(site.version), f"chunks that differ from the export outside the root: {bad}"


def test_the_rack_fetched_less_than_one_copy_by_http(site: Site, record_property: Any) -> None:
    reports = transfers(site)
    http = sum(t["bytes_http"] for t in reports.values())
    multicast = sum(t["bytes_multicast"] for t in reports.values())
    record_property("stored_bytes", site.stored_bytes)
    record_property("bytes_http", http)
    record_property("bytes_multicast", multicast)
    # HTTP alone would have moved 4 x stored_bytes; the carousel sent the image about once for all four
    assert http < site.stored_bytes, (site.stored_bytes, reports)
    assert multicast > 2 * site.stored_bytes, (site.stored_bytes, reports)


def test_the_server_sent_one_carousel_on_the_lab_bridge(site: Site) -> None:
    transfers(site)
    log = site.server.log_text()
    sending = re.findall(r"carousel (\w+): sending to ([\d.]+):(\d+) from pass", log)
    assert sending and {digest for digest, _group, _port in sending} == {site.version.digest[:12]}, log[-3000:]
    assert all(group.startswith("239.255.18.") for _digest, group, _port in sending), sending
    refused = [line for line in log.splitlines() if re.search(r"(IP_MULTICAST_IF|SO_BINDTODEVICE) .* refused", line)]
    assert refused == [], refused  # the sender is on the bridge, from the lab address: not where routing says
    for mac in MACS.values():
        assert re.search(rf"{mac}: run \S+ joins carousel", log), f"{mac} never joined:\n{log[-3000:]}"
        assert re.search(rf"{mac}: run \S+ leaves carousel", log), f"{mac} never left:\n{log[-3000:]}"
    assert "dropped from carousel" not in log, log[-3000:]
    assert site.server.problems() == [], site.server.problems()
