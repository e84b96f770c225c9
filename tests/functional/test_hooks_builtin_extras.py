"""The other built-in hooks, run for real: portal, zram-swap, laptop-power (target), firmware (live), label (server).

`target` hooks run as in test_hooks_builtin.py (a chroot of a tiny busybox tree, in namespaces of their own,
under busybox's ash and dash); `firmware` runs here under busybox's sh with busybox's applets first on PATH,
fetching from a local HTTP server into a target tree; `label` runs here with a record on stdin. Hostile
values arrive verbatim or are refused, and execute nothing.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hooks import (
    BUSYBOX,
    HOSTILE,
    MAC,
    MARKERS,
    applets_dir,
    builtin,
    builtin_env,
    intact,
    needs_busybox,
    run_builtin,
    run_direct,
    tiny_root,
)


@pytest.fixture(params=["busybox", "dash"])
def sh(request: pytest.FixtureRequest) -> str:
    """The /bin/sh of a target tree: busybox's ash, or dash (Debian's)."""
    return str(request.param)


# -------------------------------------------------------------------------------------------------- portal
@needs_busybox
def test_portal_writes_firefox_and_chromium_policies_with_titles_verbatim(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", {"usr/bin/chromium": "#!/bin/sh\n"}, shell=sh)
    (root / "usr/bin/chromium").chmod(0o755)
    (root / "usr/lib/firefox-esr").mkdir(parents=True)
    titles = [v for v in HOSTILE if "\n" not in v] + ["Lycée « ENT »"]
    marks = [f"{t}|https://ent.example.org/p{i}?a=1&b=%22" for i, t in enumerate(titles)]
    home = "https://ent.example.org/?x=1&y=2"
    code, out = run_builtin(root, "portal", homepage=home, bookmarks=marks, folder='Favoris "école" \\', locked=True)
    assert code == 0, out
    for path in ("etc/firefox-esr/policies/policies.json", "usr/lib/firefox-esr/distribution/policies.json"):
        policies = json.loads((root / path).read_text())["policies"]
        assert policies["Homepage"] == {"URL": home, "Locked": True, "StartPage": "homepage"}
        assert [(b["Title"], b["URL"]) for b in policies["Bookmarks"]] == [tuple(m.split("|", 1)) for m in marks]
    chromium = json.loads((root / "etc/chromium/policies/managed/provision-portal.json").read_text())
    assert chromium["HomepageLocation"] == home and chromium["RestoreOnStartupURLs"] == [home]
    assert chromium["ManagedBookmarks"][0] == {"toplevel_name": 'Favoris "école" \\'}
    assert [b["name"] for b in chromium["ManagedBookmarks"][1:]] == titles
    assert intact(root)


@needs_busybox
def test_portal_without_bookmarks_and_without_a_browser(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", shell=sh)
    (root / "usr/lib/firefox-esr").mkdir(parents=True)
    assert run_builtin(root, "portal", homepage="http://portal.lan/")[0] == 0
    policies = json.loads((root / "etc/firefox-esr/policies/policies.json").read_text())["policies"]
    assert policies["Bookmarks"] == [] and policies["Homepage"]["Locked"] is False
    bare = tiny_root(tmp_path / "bare", shell=sh)
    code, out = run_builtin(bare, "portal", homepage="http://portal.lan/")
    assert code == 0 and "neither Firefox nor Chromium is installed" in out
    assert not (bare / "etc/firefox-esr").exists()


@needs_busybox
@pytest.mark.parametrize(
    "params",
    [
        *({"homepage": f"https://x.org/{v}"} for v in HOSTILE if any(c in v for c in ' "\\\n')),
        {"homepage": "javascript:alert(1)"},
        {"homepage": "https://x.org/", "bookmarks": ["no separator"]},
        {"homepage": "https://x.org/", "bookmarks": ["|https://x.org/"]},
        {"homepage": "https://x.org/", "bookmarks": ["T|file:///etc/shadow"]},
        {"homepage": "https://x.org/", "bookmarks": ['T|https://x.org/"];rm -rf /']},
        {"homepage": "https://x.org/", "folder": "a\nb"},
    ],
)
def test_portal_refuses(tmp_path: Path, params: dict[str, object], sh: str) -> None:
    root = tiny_root(tmp_path / "root", shell=sh)
    (root / "usr/lib/firefox-esr").mkdir(parents=True)
    code, out = run_builtin(root, "portal", **params)
    assert code == 1 and out.startswith("portal: "), out
    assert not (root / "etc/firefox-esr").exists() and intact(root)


# ------------------------------------------------------------------------------- zram-swap, laptop-power
@needs_busybox
def test_zram_swap_with_zram_tools_or_the_generator_or_neither(tmp_path: Path, sh: str) -> None:
    tools = tiny_root(tmp_path / "tools", {"etc/default/zramswap": "#ALGO=lz4\n"}, shell=sh)
    assert run_builtin(tools, "zram-swap", percent=60)[0] == 0
    assert (tools / "etc/default/zramswap").read_text().endswith("ALGO=zstd\nPERCENT=60\n")
    generator = tiny_root(
        tmp_path / "gen", {"usr/lib/systemd/system-generators/zram-generator": "#!/bin/sh\n"}, shell=sh
    )
    (generator / "usr/lib/systemd/system-generators/zram-generator").chmod(0o755)
    assert run_builtin(generator, "zram-swap", algorithm="lz4")[0] == 0
    conf = (generator / "etc/systemd/zram-generator.conf").read_text()
    assert "[zram0]\nzram-size = ram * 50 / 100\ncompression-algorithm = lz4\n" in conf
    neither = tiny_root(tmp_path / "neither", shell=sh)
    code, out = run_builtin(neither, "zram-swap")
    assert code == 1 and "neither zram-tools nor systemd-zram-generator" in out
    assert builtin("zram-swap").header.on_failure.value == "warn"
    for params in ({"percent": 5}, {"algorithm": "$(reboot)"}):
        assert run_builtin(tools, "zram-swap", **params)[0] == 1 and intact(tools)


@needs_busybox
def test_laptop_power_writes_a_logind_drop_in(tmp_path: Path, sh: str) -> None:
    root = tiny_root(tmp_path / "root", shell=sh)
    assert run_builtin(root, "laptop-power", lid_close="suspend", lid_close_on_power="lock")[0] == 0
    conf = (root / "etc/systemd/logind.conf.d/50-provision-lid.conf").read_text()
    assert "[Login]\nHandleLidSwitch=suspend\nHandleLidSwitchExternalPower=lock\n" in conf
    for value in HOSTILE:
        assert run_builtin(root, "laptop-power", lid_close=value)[0] == 1
    assert "HandleLidSwitchExternalPower=lock" in conf and intact(root)


# ------------------------------------------------------------------------------------------ firmware (live)
FIRMWARE = {"rtl_nic/rtl8168e-3.fw": b"\x01\x02rtl" * 1000, "iwlwifi-6000-4.ucode": b"\x00intel" * 3000}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def firmware_server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    for name, data in FIRMWARE.items():
        (served / "firmware" / name).parent.mkdir(parents=True, exist_ok=True)
        (served / "firmware" / name).write_bytes(data)

    def handler(*args: object, **kwargs: object) -> _Quiet:
        return _Quiet(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/firmware"
    finally:
        server.shutdown()
        server.server_close()


def live(tmp_path: Path, root: Path, **params: object) -> tuple[int, str]:
    assert BUSYBOX is not None
    applets = tmp_path / "applets"
    if not applets.exists():
        applets_dir(applets)
    env = {**builtin_env("firmware", params), "PROVISION_ROOT": str(root)}
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    done = run_direct(builtin("firmware").path, env, work, path=str(applets), shell=(str(BUSYBOX), "sh"))
    assert not (work / "pwned").exists()
    return done.returncode, done.stdout + done.stderr


def merged_usr_root(tmp_path: Path) -> Path:
    root = tmp_path / "target"
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    return root


def listed(*names: str) -> list[str]:
    return [f"{n}:{hashlib.sha256(FIRMWARE[n]).hexdigest()}" for n in names]


@needs_busybox
def test_firmware_fetches_checks_and_places_each_file(tmp_path: Path, firmware_server: str) -> None:
    root = merged_usr_root(tmp_path)
    code, out = live(tmp_path, root, base_url=firmware_server, files=listed(*FIRMWARE))
    assert code == 0, out
    for name, data in FIRMWARE.items():
        placed = root / "usr/lib/firmware" / name
        assert placed.read_bytes() == data and (placed.stat().st_mode & 0o777) == 0o644
    assert "2 file(s) in /usr/lib/firmware" in out
    assert not list((root / "usr/lib/firmware").rglob(".provision-firmware.*"))


@needs_busybox
def test_firmware_a_wrong_sum_or_a_missing_file_fails_and_leaves_nothing(tmp_path: Path, firmware_server: str) -> None:
    root = merged_usr_root(tmp_path)
    wrong = [f"iwlwifi-6000-4.ucode:{'0' * 64}"]
    code, out = live(tmp_path, root, base_url=firmware_server + "/", files=wrong)
    assert (
        code == 1
        and f"iwlwifi-6000-4.ucode: sha256 is {hashlib.sha256(FIRMWARE['iwlwifi-6000-4.ucode']).hexdigest()}" in out
    )
    code, out = live(tmp_path, root, base_url=firmware_server, files=[f"absent.bin:{'0' * 64}"])
    assert code == 1 and "absent.bin: cannot fetch" in out
    assert [p.name for p in (root / "usr/lib/firmware").iterdir()] == []


@needs_busybox
@pytest.mark.parametrize(
    "item",
    [
        *(f"{v}:{'0' * 64}" for v in MARKERS if "\n" not in v),  # a line break: refused by hook_env
        f"../../etc/passwd:{'0' * 64}",
        f"/etc/passwd:{'0' * 64}",
        f"a/../../x:{'0' * 64}",
        f"a//b:{'0' * 64}",
        "iwlwifi-6000-4.ucode:ABC",
        "iwlwifi-6000-4.ucode",
    ],
)
def test_firmware_refuses_names_and_sums_that_are_not_plain(tmp_path: Path, firmware_server: str, item: str) -> None:
    root = merged_usr_root(tmp_path)
    code, out = live(tmp_path, root, base_url=firmware_server, files=[item])
    assert code == 1 and out.startswith("firmware: "), out
    assert list((root / "usr/lib/firmware").iterdir()) == []


@needs_busybox
def test_firmware_refuses_a_base_url_and_a_folder_leading_outside(tmp_path: Path, firmware_server: str) -> None:
    root = merged_usr_root(tmp_path)
    for base in ("ftp://x/", "http://x/a b", *(f"{firmware_server}/{v}" for v in MARKERS)):
        code, out = live(tmp_path, root, base_url=base, files=listed("iwlwifi-6000-4.ucode"))
        assert code == 1 and out.startswith("firmware: "), (base, out)
    (root / "usr/lib/firmware").mkdir(exist_ok=True)
    (root / "usr/lib/firmware/rtl_nic").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    code, out = live(tmp_path, root, base_url=firmware_server, files=listed("rtl_nic/rtl8168e-3.fw"))
    assert code == 1 and "resolves outside" in out and list((tmp_path / "elsewhere").iterdir()) == []


# ------------------------------------------------------------------------------------------- label (server)
RECORD = {
    "mac": MAC,
    "run": "run-1",
    "vendor": "Dell Inc.",
    "product": "OptiPlex 780",
    "model": "OptiPlex 780",
    "serial": HOSTILE[0],
    "cpu": HOSTILE[5],
    "ram_mb": 4096,
    "disk": 'ST500 "500 GB" $(touch pwned)',
    "image": "educ",
    "version": "20240101-120000-abcdef012345",
    "date": "2024-01-02",
    "hostname": "ecole-123456",
}


def label(tmp_path: Path, record: object, **params: object) -> tuple[int, str, Path]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = {**builtin_env("label", params), "PROVISION_STATE": str(tmp_path / "state")}
    done = run_direct(builtin("label").path, env, work, stdin=json.dumps(record))
    assert not (work / "pwned").exists()
    return done.returncode, done.stdout + done.stderr, tmp_path / "state" / "labels"


def test_label_writes_text_and_json_with_values_as_data(tmp_path: Path) -> None:
    code, out, folder = label(tmp_path, RECORD, school="Lycée Jean Moulin")
    assert code == 0, out
    text = (folder / "52-54-00-12-34-56.txt").read_text()
    assert text.splitlines() == [
        "Lycée Jean Moulin",
        "Asset:   ecole-123456",
        "Machine: Dell Inc. OptiPlex 780",
        "Serial:  ; rm -rf / #",
        "CPU:     line one line two",  # a line break is a space in the text file
        "RAM:     4096 MiB",
        'Disk:    ST500 "500 GB" $(touch pwned)',
        "Image:   educ 20240101-120000-abcdef012345",
        "Date:    2024-01-02",
        f"MAC:     {MAC}",
    ]
    data = json.loads((folder / "52-54-00-12-34-56.json").read_text())
    assert {k: data[k] for k in RECORD} == RECORD  # verbatim
    assert data["asset"] == "ecole-123456" and data["school"] == "Lycée Jean Moulin"


def test_label_reads_the_record_the_server_sends(tmp_path: Path) -> None:
    """provision.postinstall.machine_record's shape: cpu_model and cpu_cores, disk_gb, no hostname."""
    record = {"mac": MAC, "run": "r", "recipe": "laptop", "image": "educ", "version": "v1", "digest": "ab" * 32,
              "date": "2024-01-02", "vendor": "LENOVO", "product": "7360AB1", "model": "ThinkCentre M58",
              "serial": "MJ12345", "cpu_model": "Intel(R) Core(TM)2 Duo CPU E8400", "cpu_cores": 2,
              "ram_mb": 4096, "disk_gb": 250, "form_factor": "desktop"}  # fmt: skip
    code, out, folder = label(tmp_path, record)
    assert code == 0, out
    text = (folder / "52-54-00-12-34-56.txt").read_text()
    assert "Asset:   MJ12345\n" in text and "Machine: LENOVO ThinkCentre M58\n" in text
    assert "CPU:     Intel(R) Core(TM)2 Duo CPU E8400 (2 cores)\n" in text and "Disk:    250 GB\n" in text
    assert json.loads((folder / "52-54-00-12-34-56.json").read_text())["recipe"] == "laptop"


def test_label_folder_asset_and_unknown_values(tmp_path: Path) -> None:
    code, out, _ = label(tmp_path, {"mac": MAC}, folder=str(tmp_path / "mine"), asset="INV-0042")
    assert code == 0, out
    text = (tmp_path / "mine" / "52-54-00-12-34-56.txt").read_text()
    assert "Asset:   INV-0042\n" in text and "RAM:     unknown\n" in text and "Machine: unknown unknown\n" in text


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"mac": "../../etc/passwd"}, "label: the record's mac '../../etc/passwd' is not a MAC address"),
        ([1, 2], "label: the record on stdin is not a JSON object"),
        ("not json", "label: the record on stdin is not a JSON object"),
    ],
)
def test_label_refuses_a_bad_record(tmp_path: Path, record: object, message: str) -> None:
    code, out, folder = label(tmp_path, record)
    assert code == 1 and out.startswith(message), out
    assert not folder.exists()
