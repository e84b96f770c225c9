"""Boot decisions per MAC and the rendered boot scripts (golden files; set UPDATE_GOLDEN=1 to rewrite)."""

from __future__ import annotations

import os
import re

import pytest

from provision.boot import BootAction, Booter, TemplateError, kernel_arg, kernel_args
from provision.config import ServerConfig, UnknownPolicy, load_config
from provision.states import MachineState, RunState
from provision.store import Store
from tests.support.erasures import drive, report
from tests.support.paths import GOLDEN

MAC = "52:54:00:12:34:56"


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "db.sqlite") as s:
        yield s


def booter(store: Store, **boot) -> Booter:
    config = ServerConfig.model_validate({"address": "198.18.0.1", "boot": boot})
    return Booter(config, store)


def golden(name: str, text: str, store: Store) -> None:
    for row in store._db.execute("SELECT token FROM boot_tokens").fetchall():
        text = text.replace(row[0], "<TOKEN>")
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"golden file {path} is missing (UPDATE_GOLDEN=1 to create)"
    assert text == path.read_text(), f"golden file {path} differs (UPDATE_GOLDEN=1 to accept)"


def test_decisions(store):
    b = booter(store)
    assert b.decision(MAC).action is BootAction.LIVE
    store.seen(MAC)
    store.set_state(MAC, MachineState.DONE)
    d = b.decision(MAC)
    assert (d.action, d.reason) == (BootAction.LOCAL, "last run verified")
    store.set_state(MAC, MachineState.FAILED, "disk too small")
    assert b.decision(MAC).action is BootAction.LIVE
    store.set_state(MAC, MachineState.IGNORED)
    assert b.decision(MAC).action is BootAction.NONE and not b.should_answer(MAC)


def test_unknown_policy(store):
    assert booter(store, unknown="ignore").decision(MAC).action is BootAction.NONE
    assert booter(store, unknown="register").decision(MAC).action is BootAction.LIVE
    assert booter(store).config.boot.unknown is UnknownPolicy.IMAGE


def test_ipxe_live_golden_and_token(store):
    b = booter(store)
    text = b.ipxe_script(MAC)
    token = re.search(r"provision.token=([0-9a-f]+)", text)
    assert token and store.check_token(MAC, token.group(1))
    golden("boot-live.ipxe", text, store)
    again = b.ipxe_script(MAC)
    newer = re.search(r"provision.token=([0-9a-f]+)", again)
    assert newer and newer.group(1) != token.group(1)
    assert not store.check_token(MAC, token.group(1)), "an older boot's token is no longer valid"
    assert store.machine(MAC).boots == 2


def test_ipxe_local_golden(store):
    store.seen(MAC)
    store.set_state(MAC, MachineState.DONE)
    golden("boot-local.ipxe", booter(store).ipxe_script(MAC), store)
    # a local boot is counted and recorded too (the machine's boots are all its network boots)
    machine = store.machine(MAC)
    assert machine is not None and machine.boots == 1
    assert [(e.kind, e.detail) for e in store.events(MAC)][-1] == ("boot", {"via": "ipxe", "action": "local"})


def test_a_local_boot_of_an_unknown_machine_is_not_recorded(store):
    store.local_boot("52:54:00:99:99:99", via="grub")
    assert store.machine("52:54:00:99:99:99") is None and store.events("52:54:00:99:99:99") == []


def test_grub_golden(store):
    b = booter(store)
    golden("grub.cfg", b.grub_main(), store)
    golden("grub-host-live.cfg", b.grub_host(MAC), store)
    store.set_state(MAC, MachineState.DONE)
    golden("grub-host-local.cfg", b.grub_host(MAC), store)


def test_tftp_dynamic_files(store):
    b = booter(store)
    main = b.tftp_file("/grub/grub.cfg")
    assert main is not None and main.startswith(b"set timeout=0")
    host = b.tftp_file("grub/hosts/52:54:00:12:34:56.cfg")
    assert host is not None and b"provision.mac=52:54:00:12:34:56" in host
    assert b.tftp_file("grub/hosts/../../etc/passwd.cfg") is None
    assert b.tftp_file("undionly.kpxe") is None


@pytest.mark.parametrize("bad", ["a b", "x\ny", "q'uote", 'd"q', "semi;colon", "$(id)", "", "back`tick"])
def test_kernel_args_refuse_injection(bad):
    with pytest.raises(ValueError, match="unsafe"):
        kernel_arg(bad)


def test_operator_cmdline_is_checked(store, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text('boot:\n  cmdline: "quiet\\ninit=/bin/sh"\n')
    b = Booter(load_config(cfg), store)
    assert kernel_args("quiet splash") == "quiet splash"
    text = b.ipxe_script(MAC)  # newline splits into two safe tokens: still one line in the script
    assert "quiet init=/bin/sh provision.server" in text
    cfg.write_text("boot:\n  cmdline: \"quiet ';reboot'\"\n")
    with pytest.raises(TemplateError, match="unsafe kernel command line token"):
        Booter(load_config(cfg), store).ipxe_script(MAC)


def test_chain_ipxe_roms(store):
    assert booter(store).chain_ipxe(MAC, 1, True) is False  # off by default: iPXE gets its script
    b = booter(store, chain_ipxe_roms=True)
    assert b.chain_ipxe(MAC, 0xAA, True, now=100.0) is True  # the NIC ROM's exchange: chain to undionly.kpxe
    assert b.chain_ipxe(MAC, 0xAA, True, now=101.0) is True  # its retransmit / REQUEST: same answer
    assert b.chain_ipxe(MAC, 0xBB, True, now=105.0) is False  # the chained iPXE: its script
    assert b.chain_ipxe("52:54:00:00:00:01", 0xBB, True, now=105.0) is True  # another machine's ROM
    assert b.chain_ipxe(MAC, 0xCC, True, now=500.0) is True  # a later boot (window passed)


def test_chain_ipxe_after_a_vendor_rom(store):
    """A vendor PXE ROM (or OVMF's PXE) loaded iPXE: that iPXE is the chained one, not a NIC ROM."""
    b = booter(store, chain_ipxe_roms=True)
    assert b.chain_ipxe(MAC, 0x11, False, now=100.0) is False  # vendor ROM handed undionly.kpxe / snponly.efi
    assert b.chain_ipxe(MAC, 0x22, True, now=110.0) is False  # the iPXE it loaded gets its script at once


def erased(store: Store) -> None:
    """The machine's last run: erase-only, done (every drive erased and verified)."""
    store.seen(MAC)
    run = store.create_run(MAC, recipe="parts", image="", label="", digest="", plan={"erase": {"only": True}},
                           erase_only=True)  # fmt: skip
    store.record_erasure(run.id, report("t" * 32, drive("sda")), None)
    store.set_run_state(run.id, RunState.ERASING)
    store.set_run_state(run.id, RunState.DONE)


def test_an_erased_machine_powers_off_golden(store):
    erased(store)
    b = booter(store)
    d = b.decision(MAC)
    assert (d.action, d.reason) == (BootAction.OFF, "every drive erased (erase-only): nothing to boot")
    assert b.should_answer(MAC)  # answered, so that its boot script powers it off (not its empty disk)
    golden("boot-erased.ipxe", b.ipxe_script(MAC), store)
    golden("grub-host-erased.cfg", b.grub_host(MAC), store)
    assert [e.detail for e in store.events(MAC, "boot")][-2:] == [
        {"via": "ipxe", "action": "off"}, {"via": "grub", "action": "off"}
    ]  # fmt: skip
    assert store._db.execute("SELECT COUNT(*) FROM boot_tokens").fetchone()[0] == 0  # no live environment


def test_an_image_run_after_an_erasure_boots_its_disk_again(store):
    erased(store)
    store.operator_action(MAC, "reimage", "marie")
    run = store.create_run(MAC, recipe="r", image="tiny", label="L", digest="a" * 64)
    store.set_run_state(run.id, RunState.FAILED, "disk gone")
    assert booter(store).decision(MAC).action is BootAction.LIVE
    store.set_state(MAC, MachineState.DONE)  # an image run's done: its local disk
    assert booter(store).decision(MAC).action is BootAction.LOCAL
