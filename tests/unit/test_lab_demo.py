"""`provision lab demo` without QEMU: --pcs parsing, the CLI, what it needs, and the rack (power on, both phases,
the server's records in the progress lines and the result) over fake PCs and a fake server."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from provision.cli import build_parser, main
from provision.lab import follow as fl
from provision.lab import netboot_missing
from provision.lab.demo import Rack, demo_missing
from provision.lab.demorack import DEFAULT_PCS, RECIPES, DemoPC, parse_pcs
from provision.lab.server import LabServer
from provision.recipes import load_dir
from tests.support.lab import BIOS_MAC, BIOS_NETBOOT, BIOS_OWN_DISK, DIGEST, LIVE, UEFI_MAC, FakePC, api_run


# ------------------------------------------------------------------------------------------------ --pcs
def test_default_pcs_are_seabios_and_secure_boot():
    expected = (DemoPC("bios", "bios", BIOS_MAC), DemoPC("uefi-secureboot", "uefi-secureboot", UEFI_MAC))
    assert expected == DEFAULT_PCS
    assert "iPXE" in DEFAULT_PCS[0].description and "Secure Boot on" in DEFAULT_PCS[1].description


def test_parse_pcs_names_repeats_and_gives_distinct_macs():
    pcs = parse_pcs(" bios, uefi ,bios,uefi-secureboot")
    assert [pc.name for pc in pcs] == ["bios", "uefi", "bios-2", "uefi-secureboot"]
    assert [pc.firmware for pc in pcs] == ["bios", "uefi", "bios", "uefi-secureboot"]
    assert len({pc.mac for pc in pcs}) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "no PCs"), (" , ", "no PCs"), ("bios,efi", "unknown PC kind 'efi'"), (",".join(["bios"] * 9), "at most 8")],
)
def test_parse_pcs_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        parse_pcs(text)


def test_cli_parses_pcs_and_defaults():
    args = build_parser().parse_args(["lab", "demo"])
    assert args.pcs == DEFAULT_PCS and not args.keep_running and args.cache is None and args.workdir is None
    args = build_parser().parse_args(["lab", "demo", "--pcs", "uefi", "--keep-running", "--workdir", "/tmp/x"])
    assert [pc.firmware for pc in args.pcs] == ["uefi"] and args.keep_running and args.workdir == "/tmp/x"


def test_cli_bad_pcs_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lab", "demo", "--pcs", "bios,pdp11"])
    assert exc.value.code == 2
    assert "provision: error: argument --pcs: unknown PC kind 'pdp11'" in capsys.readouterr().err


def test_cli_lab_unavailable_is_a_clean_error(monkeypatch, tmp_path):
    monkeypatch.setattr("provision.lab.demo.demo_missing", lambda firmware: ["mmdebstrap (Debian package mmdebstrap)"])
    out, err = io.StringIO(), io.StringIO()
    code = main(["lab", "demo", "--workdir", str(tmp_path / "w")], out=out, err=err)
    assert code == 1 and out.getvalue() == ""
    assert err.getvalue() == "provision: error: lab unavailable, missing: mmdebstrap (Debian package mmdebstrap)\n"


def test_demo_missing_names_debian_packages_and_root_once(monkeypatch):
    for item in netboot_missing(["bios", "uefi-secureboot"]) + demo_missing(["bios"]):  # empty on a ready machine
        assert item.startswith("root") or "Debian package" in item or item == "/dev/net/tun"
    monkeypatch.setattr("provision.lab.demo.netboot_missing", lambda firmware: ["root (network namespaces and taps)"])
    monkeypatch.setattr(
        "provision.live.build.live_missing", lambda: ["root (mmdebstrap)", "depmod (Debian package kmod)"]
    )
    monkeypatch.setattr("provision.lab.demo.shutil.which", lambda tool: None if tool == "sfdisk" else "/bin/x")
    assert demo_missing(["bios"]) == [
        "root (network namespaces and taps)",
        "depmod (Debian package kmod)",
        "sfdisk (Debian package fdisk)",
    ]


def test_demo_recipes_image_tiny_by_firmware_and_grow(tmp_path):
    for name, text in RECIPES.items():
        (tmp_path / name).write_text(text)
    recipes = {r.recipe.name: r.recipe for r in load_dir(tmp_path).recipes}
    assert set(recipes) == {"bios-pc", "uefi-pc"}
    for recipe in recipes.values():
        assert (recipe.image, recipe.wipe, recipe.grow_root) == ("tiny", "zero", True)
        assert recipe.erase is not None and (recipe.erase.method, recipe.erase.verify) == ("auto", "sample")
        assert [(h.name, h.params) for h in recipe.hooks] == [("hostname", {"hostname": "poste-{{ firmware }}"})]


# ------------------------------------------------------------------------------------------------ the rack
@dataclass(kw_only=True)
class FakeQemu(FakePC):
    """A lab PC: its serial log grows by one chunk per poll, 5 s apart; QEMU exits after the last chunk."""

    workdir: Path
    started: float

    def __post_init__(self) -> None:
        self.exit_after = len(self.chunks)


@dataclass
class FakeLab:
    tmp: Path
    own_disk: bool = True  # the second boot gets to the callback
    added: list[dict[str, Any]] = field(default_factory=list)

    def add_pc(self, name: str, **spec: Any) -> FakeQemu:
        self.added.append({"name": name, **spec})
        (self.tmp / name).mkdir()
        (self.tmp / name / "serial.log").touch()
        return FakeQemu(chunks=BIOS_NETBOOT + LIVE, workdir=self.tmp / name, started=100.0)

    def power_on(self, qemu: FakeQemu) -> FakeQemu:
        (qemu.workdir / "serial.1.log").touch()
        chunks = BIOS_OWN_DISK if self.own_disk else BIOS_OWN_DISK[:2]
        return FakeQemu(chunks=chunks, workdir=qemu.workdir, started=qemu.started + 45.5)


class FakeServer:
    def __init__(self, firstboot: bool = True) -> None:
        self.firstboot = firstboot
        self.paths: list[str] = []

    def api(self, path: str) -> Any:
        self.paths.append(path)
        return [api_run()]

    def machine(self, mac: str) -> dict[str, Any] | None:
        return {"mac": mac, "state": "done", "boots": 2}

    def events(self, mac: str) -> list[dict[str, Any]]:
        hello = {"kind": "hello", "detail": {"boot": {"firmware": "bios", "secure_boot": None, "kernel": "6.1.0-56"}}}
        first = {
            "kind": "firstboot",
            "detail": {"image": "tiny", "label": "tiny-41936d48a27f", "hostname": "poste-bios"},
        }
        return [hello, first] if self.firstboot else [hello]


def run_rack(tmp_path: Path, lab: FakeLab, server: FakeServer) -> tuple[list[str], Any]:
    lines: list[str] = []
    rack = Rack(cast(Any, lab), cast(LabServer, server), lines.append, 300, 180)
    pc = DEFAULT_PCS[0]
    follower = rack.power_on(pc, tmp_path / "pxe-virtio.rom")
    fl.follow([follower], rack.on_event, rack.next_phase, poll=0)
    return lines, rack.result(pc)


def test_rack_images_a_pc_powers_it_on_again_and_reports_the_server_records(tmp_path):
    lab, server = FakeLab(tmp_path), FakeServer()
    lines, result = run_rack(tmp_path, lab, server)
    assert lab.added == [
        {"name": "bios", "firmware": "bios", "mac": BIOS_MAC, "rom": tmp_path / "pxe-virtio.rom"}
        | {"disk_size": 256 << 20, "memory": 1024}
    ]
    assert lines[0] == (
        f"pc bios: SeaBIOS, Debian 13 iPXE NIC ROM, MAC {BIOS_MAC}, blank 256 MiB disk, 1024 MiB RAM: powered on"
    )
    assert (
        "pc bios  30.0 s  imaging plan: image tiny onto /dev/vda, recipe bios-pc, "
        "version 20261127-103806-8829dcb30439, run bab199be" in lines
    )
    assert (
        "pc bios  35.0 s  written + verified: 50 MB written, 50 MB/s; server: run bab199be done, verified root "
        "digest 8829dcb30439" in lines
    )
    assert lines[lines.index("pc bios  40.0 s  reboot: QEMU exits (-no-reboot)") + 1] == (
        "pc bios  45.5 s  power on: the demo presses the power button again"
    )
    assert "pc bios  65.5 s  callback: POST /api/v1/firstboot accepted" in lines
    assert lines[-3:] == [
        f"server: {BIOS_MAC} (bios) state done, 2 boot(s), hello: firmware bios, Secure Boot n/a, kernel 6.1.0-56",
        f"server: {BIOS_MAC} (bios) run {api_run()['id']} done: recipe bios-pc, image "
        f"tiny@20261127-103806-8829dcb30439, 50 MB written at 50 MB/s, verified root digest {DIGEST}",
        f"server: {BIOS_MAC} (bios) first boot from its own disk: tiny-41936d48a27f, host name poste-bios",
    ]
    assert server.paths[0] == f"/api/v1/runs?mac={BIOS_MAC}"
    assert result.ok and result.error is None and result.firstboot == "tiny-41936d48a27f"
    assert result.milestones[fl.POWER_ON] == 45.5 and result.milestones[fl.VERIFIED] == 35.0
    assert result.serial_logs == (tmp_path / "bios" / "serial.1.log", tmp_path / "bios" / "serial.log")


def test_rack_reports_a_pc_that_did_not_reach_the_callback(tmp_path):
    lines, result = run_rack(tmp_path, FakeLab(tmp_path, own_disk=False), FakeServer(firstboot=False))
    assert lines[-3] == "pc bios  60.5 s  FAILED: QEMU stopped before first boot"
    assert not result.ok and result.imaged and result.failed_phase == fl.OWN_DISK
    assert result.reason() == "QEMU stopped before first boot"
