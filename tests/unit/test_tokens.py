"""Who gets a per-boot token and who may use it (issue 12, defects 1 and 2): the kernel's neighbour table binds
a boot script and every agent call to the PC that network-booted; a MAC with a run in flight gets a new token
only after it network-booted again."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.boot import Booter, script_text
from provision.config import ServerConfig
from provision.errors import TokenRefused
from provision.neighbors import mac_of, parse_arp_table
from provision.runs import Runs
from provision.store import Store
from provision.wire.api import Hello, Progress

MAC = "52:54:00:12:34:56"
PC = "198.18.0.50"
OTHER = "198.18.0.66"
ARP = """IP address       HW type     Flags       HW address            Mask     Device
198.18.0.50      0x1         0x2         52:54:00:12:34:56     *        br0
198.18.0.66      0x1         0x2         52:54:00:66:66:66     *        br0
198.18.0.77      0x1         0x0         00:00:00:00:00:00     *        br0
garbage line
198.18.0.88      0x1         0x2         not-a-mac             *        br0
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.sqlite") as s:
        yield s


def bound_booter(store: Store, binding: str = "neighbour") -> Booter:
    config = ServerConfig.model_validate({"address": "198.18.0.1", "boot": {"bind_tokens": binding}})
    table = parse_arp_table(ARP)
    return Booter(config, store, neighbours=table.get)


def token_in(script: str) -> str | None:
    found = re.search(r"provision\.token=([0-9a-f]+)", script)
    return found.group(1) if found else None


def test_arp_table_keeps_complete_entries_only(tmp_path: Path) -> None:
    assert parse_arp_table(ARP) == {PC: MAC, OTHER: "52:54:00:66:66:66"}
    table = tmp_path / "arp"
    table.write_text(ARP)
    assert mac_of(PC, table) == MAC and mac_of("198.18.0.77", table) is None
    assert mac_of(PC, tmp_path / "absent") is None


def test_defect1_a_token_only_for_the_pc_that_netbooted(store: Store) -> None:
    booter = bound_booter(store)
    refused = booter.ipxe_script(MAC, OTHER)
    assert token_in(refused) is None and "52:54:00:66:66:66, not 52:54:00:12:34:56" in refused
    assert token_in(booter.grub_host(MAC, OTHER)) is None
    assert token_in(booter.ipxe_script(MAC, "198.18.0.99")) is None  # not in the table at all
    assert token_in(booter.ipxe_script(MAC, PC)) is not None
    assert token_in(booter.grub_host(MAC, PC)) is not None


def test_binding_off_and_auto(store: Store) -> None:
    assert token_in(bound_booter(store, "off").ipxe_script(MAC, OTHER)) is not None
    auto = ServerConfig.model_validate({"address": "198.18.0.1"})
    assert not auto.tokens_bound  # no interface: tests on loopback
    assert ServerConfig.model_validate({"address": "198.18.0.1", "interface": "br0"}).tokens_bound


def test_defect1_no_new_token_while_a_run_is_in_flight_unless_the_pc_netbooted(store: Store) -> None:
    booter = bound_booter(store)
    token = token_in(booter.ipxe_script(MAC, PC))
    assert token is not None
    run = store.create_run(MAC, recipe="r", image="tiny", label="L", digest="a" * 64, token=token)
    script = booter.ipxe_script(MAC, PC)
    assert token_in(script) is None and f"run {run.id[:8]} is under way" in script
    booter.should_answer(MAC)  # the PC's PXE ROM asks DHCP: it network-booted again
    assert [e.detail["via"] for e in store.events(MAC, "netboot")] == ["dhcp"]
    assert token_in(booter.ipxe_script(MAC, PC)) is not None


def started_long_ago(store: Store, run_id: str, token: str, *, extended: bool) -> None:
    """The run started 7 h ago with a token of the default 6 h lifetime; ``extended``: its progress kept the
    token alive (``extend_token`` 2 h ago, before it expired)."""
    then = time.time() - 7 * 3600
    expires = time.time() + 4 * 3600 if extended else then + 6 * 3600
    with store._tx() as db:
        db.execute("UPDATE runs SET started = ? WHERE id = ?", (then, run_id))
        db.execute("UPDATE boot_tokens SET issued_at = ?, expires_at = ? WHERE token = ?", (then, expires, token))


def test_a_long_run_whose_token_its_progress_extended_is_still_in_flight(store: Store) -> None:
    """A 7 h erasure keeps posting progress (each extends its token): a boot script fetched now must not hand out
    a new token that would take the run from it."""
    booter = bound_booter(store)
    token = token_in(booter.ipxe_script(MAC, PC))
    assert token is not None
    run = store.create_run(MAC, recipe="r", image="tiny", label="L", digest="a" * 64, token=token)
    started_long_ago(store, run.id, token, extended=True)
    assert store.check_token(MAC, token)
    script = booter.ipxe_script(MAC, PC)
    assert token_in(script) is None and f"run {run.id[:8]} is under way" in script


def test_a_run_whose_token_expired_unextended_is_abandoned(store: Store) -> None:
    booter = bound_booter(store)
    token = token_in(booter.ipxe_script(MAC, PC))
    assert token is not None
    run = store.create_run(MAC, recipe="r", image="tiny", label="L", digest="a" * 64, token=token)
    started_long_ago(store, run.id, token, extended=False)
    assert not store.check_token(MAC, token)
    assert token_in(booter.ipxe_script(MAC, PC)) is not None


def test_a_tftp_read_from_the_pc_is_a_network_boot(store: Store) -> None:
    booter = bound_booter(store)
    token = token_in(booter.ipxe_script(MAC, PC))
    store.create_run(MAC, recipe="r", image="tiny", label="L", digest="a" * 64, token=token)
    assert booter.tftp_file("undionly.kpxe", OTHER) is None  # another PC's read: not this MAC's boot
    assert store.events(MAC, "netboot") == []
    booter.tftp_file("undionly.kpxe", PC)
    assert [e.detail["via"] for e in store.events(MAC, "netboot")] == ["tftp"]


def test_defect1_agent_calls_come_from_the_pc(store: Store, tmp_path: Path) -> None:
    booter = bound_booter(store)
    token = token_in(booter.ipxe_script(MAC, PC))
    assert token is not None
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    runs = Runs(store, None, recipes, tmp_path / "probes", address_check=booter.address_is)
    with pytest.raises(TokenRefused, match="not 52:54:00:12:34:56"):
        runs.hello(Hello(MAC, token), OTHER)
    assert runs.hello(Hello(MAC, token), PC).action == "wait"  # no facts: waits, but the call was accepted


def test_script_text_is_one_plain_line() -> None:
    assert script_text('run "x"; reboot\n$(id) `x`') == "run ?x?; reboot??(id) ?x?"


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@live"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0aGlzIGlzIG5vdCB0aGUgc2FtZSBrZXkgYXQgYWxsIQ== root@x"


def test_the_hello_pins_the_live_environments_host_key_for_the_run(store: Store, tmp_path: Path) -> None:
    """Issue 13: the hooks run over SSH only to the host key the authenticated hello reported."""
    from provision.facts import load_probe
    from tests.support.paths import SAMPLE_PROBE

    booter = bound_booter(store, "off")
    token = token_in(booter.ipxe_script(MAC, PC))
    assert token is not None
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "r.yaml").write_text("name: r\ndefault: true\naction: wait\n")
    runs = Runs(store, None, recipes, tmp_path / "probes")
    facts = load_probe(SAMPLE_PROBE).to_dict()
    runs.hello(Hello(MAC, token, facts=facts, host_key=KEY), PC)  # waits: no run, nothing pinned yet
    plan = {"image": "tiny", "version": "L", "digest": "a" * 64}
    run = store.create_run(
        MAC, recipe="r", image="tiny", label="L", digest="a" * 64, token=token, plan=plan, live_address=PC, host_key=KEY
    )
    assert store.run_live(run.id) == (PC, KEY)
    assert runs.hello(Hello(MAC, token, facts=facts, host_key=KEY), PC).action == "image"  # the same plan again
    with pytest.raises(TokenRefused, match="host key changed"):
        runs.hello(Hello(MAC, token, facts=facts, host_key=OTHER_KEY), PC)


def test_accepted_progress_keeps_the_runs_token_alive_past_its_first_lifetime(store: Store, tmp_path: Path) -> None:
    """An erasure (or a write) may outlast the token's first lifetime (a 2 TB disk overwritten and read back:
    ~7 h; the token: 6 h): each accepted progress, erasure or write, extends it; its final report then counts."""
    from provision.wire.erasure import ErasureProgress
    from tests.support.erasures import drive, report

    store.seen(MAC)
    runs = Runs(store, None, tmp_path, tmp_path / "probes", token_ttl=3600)
    short = 0.5  # the token's first lifetime, in seconds
    token = store.issue_token(MAC, "ipxe", ttl=short)
    erase = store.create_run(MAC, recipe="parts", image="", label="", digest="", token=token, erase_only=True,
                             plan={"erase": {"method": "auto", "only": True}})  # fmt: skip
    runs.erasing.progress(erase.id, ErasureProgress(token, {"sda": 0.1}))
    found = store.current_token(MAC, token)
    assert found is not None and found.expires_at >= time.time() + 3500
    time.sleep(short + 0.2)  # past the first lifetime: the report is still accepted and recorded
    assert runs.erasing.report(erase.id, report(token, drive("sda"))).state == "done"
    assert len(store.erasures(run=erase.id)) == 1

    token = store.issue_token(MAC, "ipxe", ttl=short)
    write = store.create_run(MAC, recipe="r", image="tiny", label="L", digest="a" * 64, token=token,
                             plan={"image": "tiny"})  # fmt: skip
    runs.progress(write.id, Progress(token, "writing", 1 << 20, 4 << 20, 1.0))
    found = store.current_token(MAC, token)
    assert found is not None and found.expires_at >= time.time() + 3500
    assert store.extend_token(MAC, "0" * 32, 3600) is None  # only the MAC's current token is ever extended
    with pytest.raises(TokenRefused):
        runs.progress(write.id, Progress("0" * 32, "writing", 2 << 20, 4 << 20, 1.0))

    token = store.issue_token(MAC, "ipxe", ttl=short)  # no progress: it expires as before
    write = store.create_run(MAC, recipe="r", image="tiny", label="L", digest="a" * 64, token=token,
                             plan={"image": "tiny"})  # fmt: skip
    time.sleep(short + 0.2)
    with pytest.raises(TokenRefused, match="expired"):
        runs.progress(write.id, Progress(token, "writing", 1, 4, 1.0))
    assert store.extend_token(MAC, token, 3600) is None  # an expired token is not brought back
