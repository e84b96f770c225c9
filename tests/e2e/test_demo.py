"""`provision lab demo` as a user runs it, once: a process that prepares the live environment and the tiny image,
images the default rack (SeaBIOS + iPXE ROM, OVMF with Secure Boot on) from `provision serve` in a private
namespace, powers both PCs on again to boot their own disk, reports each milestone, the runs as the server
recorded them and the tables, exits 0 and leaves no namespace behind. Meanwhile Debian's chromium (when
installed) has the dashboard the demo printed open on this machine: both tiles appear and move to done without
a reload (a screenshot, dashboard/demo-rack.png, under the test artifacts). The server's state (kept in the
workdir) then shows both machines done with the verified digest. ~2 min (1 passed in 112 s here); a cold live
build adds ~1 min.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.support.browser import Browser, browser_missing
from tests.support.e2e import machines_json, require_lab
from tests.support.paths import ARTIFACTS, DEB_CACHE, REPO

pytestmark = pytest.mark.e2e

BIOS_MAC = "52:54:00:de:00:01"
SB_MAC = "52:54:00:de:00:02"
TIMEOUT = 1200  # set-up (a cold live build, downloads) + the demo's own 300 s imaging and 180 s own-disk timeouts
IMAGING_SECONDS = 420  # the demo's 300 s imaging timeout, and its own-disk phase after
T = r"\s+\d+\.\d s  "  # a PC's progress line: its name, padded, then the seconds since its first power-on


def in_order(text: str, patterns: list[str]) -> None:
    position = 0
    for pattern in patterns:
        found = re.compile(pattern, re.MULTILINE).search(text, position)
        assert found is not None, f"no {pattern!r} after offset {position} in:\n{text}"
        position = found.end()


def test_lab_demo_images_the_default_rack_and_boots_it_from_its_own_disk(tmp_path: Path) -> None:
    require_lab("bios", "uefi-secureboot")
    argv = [sys.executable, "-m", "provision", "lab", "demo", "--cache", str(DEB_CACHE), "--workdir", str(tmp_path)]
    began = time.monotonic()
    with (tmp_path / "demo.stderr").open("w") as errors:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=errors, text=True)
    lines: list[str] = []
    dashboard = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("dashboard: open "):
                dashboard.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        seen = watch_the_dashboard(lines, dashboard, proc) if browser_missing() is None else None
        proc.wait(timeout=max(1.0, TIMEOUT - (time.monotonic() - began)))
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    out = "".join(lines)
    err = (tmp_path / "demo.stderr").read_text()
    seconds = time.monotonic() - began
    print(f"\nlab demo: {seconds:.1f} s\n{out}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert "Traceback" not in err and "ERROR" not in err, err

    digest = re.search(r"^image tiny-\w+ built in \d+\.\d s: 128 MiB, .* root digest (\w{12})$", out, re.MULTILINE)
    assert digest is not None, out
    short = digest.group(1)
    in_order(
        out,
        [
            r"^boot root ready in \d+\.\d s \(kernel \S+\)$",
            r"^live environment (built|reused) in \d+\.\d s \(\d+ MiB\)$",
            r"^recipes: bios-pc, uefi-pc \(by firmware\): erase every drive, image tiny, wipe zero, grow the root file "
            r"system, hook hostname$",
            r"^lab: network namespace prov-\d+-\d+, bridge br0 198\.18\.0\.1/24",
            r"^server: provision serve \(pid \d+\) on br0: full DHCP 198\.18\.0\.100-198\.18\.0\.200",
            r"^dashboard: open http://127\.0\.0\.1:\d+/ in a browser of this machine",
            rf"^pc bios: SeaBIOS, Debian 13 iPXE NIC ROM, MAC {BIOS_MAC}, blank 256 MiB disk, 1024 MiB RAM: powered on",
            rf"^pc uefi-secureboot: OVMF, Secure Boot on, no NIC ROM \(firmware PXE\), MAC {SB_MAC}, ",
        ],
    )
    for name, mac, firmware, secure_boot, dhcp, boot_file, config, recipe in (
        (
            "bios",
            BIOS_MAC,
            "bios",
            "n/a",
            "iPXE NIC ROM",
            "undionly",
            rf"boot script /boot/{BIOS_MAC}\.ipxe",
            "bios-pc",
        ),
        (
            "uefi-secureboot",
            SB_MAC,
            "uefi",
            "on",
            "firmware PXE",
            "shimx64",
            rf"GRUB config grub/hosts/{SB_MAC}",
            "uefi-pc",
        ),
    ):
        steps = [
            rf"DHCP: address 198\.18\.0\.\d+ \({dhcp}\)",
            rf"boot file: {boot_file}\.",
            rf"{config}.*: live$",
            r"kernel: Linux \S+ starts",
            r"live environment up: 198\.18\.0\.\d+, ",
            rf"imaging plan: image tiny onto /dev/vda, recipe {recipe}, version \S+, run \w{{8}}$",
            rf"written \+ verified: \d+ MB written, \d+ MB/s; server: run \w{{8}} done, verified root digest {short}$",
            r"reboot: QEMU exits \(-no-reboot\)",
            r"power on: the demo presses the power button again",
            rf"DHCP: address 198\.18\.0\.\d+ \({dhcp}\)",
            rf"{config}.*: local disk$",
            r"first boot of tiny-\w+ from its own disk",
            r"callback: POST /api/v1/firstboot accepted",
        ]
        in_order(out, [rf"^pc {re.escape(name)}{T}{step}" for step in steps])
        server = rf"^server: {mac} \({name}\) "
        in_order(
            out,
            [
                rf"{server}state done, \d+ boot\(s\), hello: firmware {firmware}, Secure Boot {secure_boot}, ",
                rf"{server}run \w+ done: recipe {recipe}, image tiny@\S+, \d+ MB written at \d+ MB/s, "
                rf"verified root digest {short}\w{{52}}$",
                # its one disk erased before the write: QEMU's virtio disk has no erase command, so one overwrite
                # pass (NIST Clear), read back on a sample
                rf"{server}erased vda( \(serial \S+\))?: overwrite, NIST clear, sample read-back of \d+ MB: ok$",
                rf"{server}first boot from its own disk: tiny-\w+, host name poste-{firmware}$",
            ],
        )
    in_order(
        out,
        [
            r"^server stopped \(exit 0\)$",
            r"^lab prov-\d+-\d+ removed: namespace, bridge, taps, processes$",
            r"^MILESTONE \(s\) +bios +uefi-secureboot$",
            r"^callback +\d+\.\d +\d+\.\d$",
            r"^MAC +PC +FIRMWARE +SECURE BOOT +RECIPE +RUN +VERIFIED +MB/S +IMAGED +CALLBACK +HOST NAME$",
            rf"^{BIOS_MAC}  bios +bios +n/a +bios-pc +done +{short} +\d+ +\d+\.\d s +\d+\.\d s +poste-bios$",
            rf"^{SB_MAC}  uefi-secureboot +uefi +on +uefi-pc +done +{short} +\d+ +\d+\.\d s +\d+\.\d s +poste-uefi$",
            rf"^OK: 2 of 2 PCs imaged with tiny-\w+ \(root digest {short}, verified\) and booted from their own disk "
            r"to the first-boot callback \(\d+ s from start, set-up \d+ s\)$",
        ],
    )
    assert "server log:" not in out  # provision logged no error

    state = tmp_path / "lab/provision/state"
    rows = machines_json(state)
    for mac in (BIOS_MAC, SB_MAC):
        assert (rows[mac]["state"], rows[mac]["last_run_state"]) == ("done", "done"), rows[mac]
        assert rows[mac]["verified_digest"].startswith(short), rows[mac]
        listed = subprocess.run(
            [sys.executable, "-m", "provision", "runs", mac, "--json", "--state-dir", str(state)],
            capture_output=True, text=True, check=True, cwd=REPO,
        )  # fmt: skip
        [run] = json.loads(listed.stdout)
        # the hostname hook ran over SSH in the PC's live environment, in a chroot of its written disk
        assert [(h["name"], h["place"], h["ok"], h["exit_code"]) for h in run["hooks"]] == [
            ("hostname", "target", True, 0)
        ]
        assert "hostname: poste-" in run["hooks"][0]["output"] and run["warnings"] == []
        assert [(e["device"], e["method"], e["category"], e["ok"]) for e in run["erasures"]] == [
            ("vda", "overwrite", "clear", True)
        ]
    # the city's report (issue 18) counts the demo's two PCs: one run each, imaged, its drive erased (overwrite)
    listed = subprocess.run(
        [sys.executable, "-m", "provision", "report", "--json", "--by", "recipe", "--state-dir", str(state)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    report = json.loads(listed.stdout)
    total = report["total"]
    assert (total["runs_ended"], total["imaged"], total["machines_imaged"], total["success_rate"]) == (2, 2, 2, 1.0)
    assert total["erasures"] == [{"method": "overwrite", "drives": 2, "ok": 2, "bytes": total["erasures"][0]["bytes"]}]
    assert {g["key"]: g["imaged"] for g in report["groups"]} == {"bios-pc": 1, "uefi-pc": 1}
    assert total["bytes_written"] > 0 and total["bytes_http"] + total["bytes_multicast"] > 0
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not re.search(rf"^prov-{proc.pid}-", namespaces, re.MULTILINE), namespaces
    if seen is not None:  # the dashboard, in chromium on this machine, followed the PCs live (no reload):
        for mac in (BIOS_MAC, SB_MAC):  # each tile appeared after the page was open, moved, and ended done
            assert len(seen[mac]) >= 2 and seen[mac][0] != "done" and seen[mac][-1] == "done", seen


def watch_the_dashboard(
    lines: list[str], dashboard: threading.Event, proc: subprocess.Popen[str]
) -> dict[str, list[str]]:
    """Open the dashboard the demo printed in a real browser and follow both tiles without reloading, until
    both are done: the stages each tile showed, in order. A screenshot of the rack at the end."""
    assert dashboard.wait(TIMEOUT), "".join(lines)
    url = next(line.split()[2] for line in lines if line.startswith("dashboard: open "))
    browser = Browser(Path(tempfile.mkdtemp(prefix="demo-chromium-")), url.rstrip("/"), ARTIFACTS / "dashboard")
    seen: dict[str, list[str]] = {BIOS_MAC: [], SB_MAC: []}
    try:
        browser.open("/")
        deadline = time.monotonic() + IMAGING_SECONDS
        while time.monotonic() < deadline and proc.poll() is None:
            for mac, stages in seen.items():
                tile = browser.tile(mac)
                if tile is not None and (not stages or stages[-1] != tile["stage"]):
                    stages.append(tile["stage"])
            if all(stages and stages[-1] == "done" for stages in seen.values()):
                break
            time.sleep(0.2)
        browser.shot("demo-rack.png")
    finally:
        browser.quit()
    return seen
