"""The PC's own screen on a QEMU PC with a VGA card: a PC whose recipe sends it to repair (its RAM under the
recipe's minimum) network-boots the live environment from a real `provision serve` in a lab namespace; the
agent's hello gets `repair`, and the agent draws the PC's screen: its tile number, the stage and the same plain
French reason as its tile. On the host: the machine is in repair, its tile on the dashboard (through the demo's
port forward) is number 1 with the reason "pas assez de mémoire", and the PC's screen (QEMU's screendump) is
saved as a PNG under the test artifacts (``$PROVISION_ARTIFACTS`` or tests/artifacts, ``pc-screen/repair.png``)
for a person to look at; the test checks it holds a drawn text screen (several colours), not a blank one.

Needs root, qemu-system-x86, mmdebstrap (the live environment, cached). ~40 s.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from provision.bootfiles import BootRoot
from provision.lab import Lab
from provision.lab.forward import forward
from tests.support.e2e import HTTP_PORT, ProvisionServe, Timing, provision_config, require_lab, stop_server
from tests.support.live import LiveEnv
from tests.support.paths import REPO

pytestmark = pytest.mark.e2e

MAC = "52:54:00:5c:00:01"
RECIPE = "name: big-ram-only\ndefault: true\nimage: tiny\nhealth:\n  min_ram_mb: 64000\n"
REPAIR_TIMEOUT = 240.0
ARTIFACTS = Path(os.environ.get("PROVISION_ARTIFACTS", REPO / "tests" / "artifacts")) / "pc-screen"


@pytest.fixture
def served(netboot_root: BootRoot, live_env: LiveEnv, tmp_path: Path) -> Iterator[tuple[Lab, ProvisionServe]]:
    require_lab("bios")
    root = tmp_path / "boot"
    shutil.copytree(netboot_root.dest, root, symlinks=True)
    for name in ("vmlinuz", "initrd.img"):  # the session's live environment build (tests/conftest.py)
        (root / "live" / name).unlink(missing_ok=True)
        shutil.copyfile(live_env.out / name, root / "live" / name)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text(RECIPE)
    with Lab(workdir=tmp_path / "lab") as lab:
        server = ProvisionServe.start(lab, root, {**provision_config(lab), "recipes_dir": str(recipes)}, dhcp="full")
        yield lab, server
        for pc in lab.pcs:
            pc.stop()
        stop_server(server)


def test_the_pc_screen_shows_its_tile_stage_and_reason(
    served: tuple[Lab, ProvisionServe], trixie_rom: Path, timing: Timing
) -> None:
    lab, server = served
    pc = lab.add_pc("screen", firmware="bios", mac=MAC, rom=trixie_rom, memory=1024, screen=True)
    pc.wait_for(r"PROVISION-LIVE-AGENT-EXIT 4", REPAIR_TIMEOUT, fail=r"Kernel panic|No bootable device")
    timing("agent: repair", pc.elapsed)
    machine = server.machine(MAC)
    assert machine is not None and machine["state"] == "repair", machine

    dashboard = forward(lab, str(lab.address), HTTP_PORT)
    rack = requests.get(f"{dashboard.url}?lang=fr", timeout=10)
    assert rack.status_code == 200 and "pas assez de mémoire" in rack.text, rack.text[:3000]

    png = pc.screendump(ARTIFACTS / "repair.png")
    ppm_free = list(pc.workdir.glob("screen-*.ppm")) == []
    assert png.stat().st_size > 1000 and ppm_free
    assert screen_colours(png) >= 3, f"the PC's screen looks blank: {png}"


def screen_colours(png: Path) -> int:
    """Distinct colours of the PNG's pixels (decoded with zlib: filter type 0 rows, as ppm_to_png writes)."""
    import struct
    import zlib

    data = png.read_bytes()
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width = struct.unpack(">I", body[:4])[0]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * 3 + 1
    colours = {raw[i : i + 3] for row in range(0, len(raw), stride) for i in range(row + 1, row + stride, 3)}
    return len(colours)
