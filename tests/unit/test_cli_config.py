"""`provision config check|show|defaults|reference`: each kind of problem with its exact FILE:LINE: key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.cli import run
from tests.support.paths import REPO

GOOD = "address: 198.19.0.1\ndhcp:\n  mode: full\n  range_start: 198.19.0.100\n  range_end: 198.19.0.250\n"


def check(tmp_path: Path, text: str) -> tuple[int, list[str]]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    code, out, err = run("config", "check", str(path))
    assert err == ""
    return code, [line.replace(f"{tmp_path}/", "") for line in out.splitlines()]


def test_a_good_file_is_ok(tmp_path: Path) -> None:
    assert check(tmp_path, GOOD) == (0, ["c.yaml: ok"])
    assert check(tmp_path, "") == (0, ["c.yaml: ok"])  # an empty file: every default
    assert check(tmp_path, GOOD + "network: 198.19.0.0/24\n") == (0, ["c.yaml: ok"])  # everything inside it


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (GOOD + "adress: 198.19.0.1\n", "c.yaml:6: adress: unknown key"),
        (GOOD + "boot:\n  kernl: x\n", "c.yaml:7: boot.kernl: unknown key"),
        (GOOD + "ports:\n  http: eighty\n", "c.yaml:7: ports.http: Input should be a valid integer, unable to parse"),
        (GOOD + "ports:\n  http: 70000\n", "c.yaml:7: ports.http: Input should be less than or equal to 65535"),
        (GOOD + "boot:\n  unknown: maybe\n", "c.yaml:7: boot.unknown: Input should be 'image', 'register' or"),
        (GOOD + "address: 198.19.0.2\n", "c.yaml:6: address: duplicate key (first set on line 1)"),
        ("dhcp:\n  mode: full\n", "c.yaml:1: dhcp: full DHCP needs range_start and range_end"),
        ("address: 198.19.0.300\n", "c.yaml:1: address: Input is not a valid IPv4 address"),
        ("hooks:\n  workers: 0\n", "c.yaml:2: hooks.workers: Input should be greater than or equal to 1"),
        ("address: [1\n", "c.yaml:2: YAML syntax error"),
        ("- a list\n", "c.yaml:1: the configuration must be a YAML mapping"),
        ("address: 198.19.1.1\nnetwork: 198.19.0.0/24\n", "c.yaml:2: network: address 198.19.1.1 is outside network"),
        (GOOD + "network: 198.19.0.0/25\n", "c.yaml:2: dhcp: outside network 198.19.0.0/25: range_end 198.19.0.250"),
        ("network: 198.19.0.0/24\naddress: 198.19.0.1\ndhcp:\n  router: 10.9.0.1\n", "c.yaml:3: dhcp: outside network"),
        (GOOD + "  netmask: 255.255.0.0\nnetwork: 198.19.0.0/24\n", "c.yaml:2: dhcp: netmask 255.255.0.0 is not"),
        ("network: 198.19.0.1/24\n", "c.yaml:1: network: Input is not a valid IPv4 network"),
    ],
)
def test_each_kind_of_problem_names_its_line(tmp_path: Path, text: str, problem: str) -> None:
    code, lines = check(tmp_path, text)
    assert code == 1
    assert lines[0].startswith(problem), lines
    assert lines[-1] == "c.yaml: 1 problem(s)"


def test_every_problem_at_once_in_line_order(tmp_path: Path) -> None:
    text = "ports:\n  http: 70000\nadress: x\nports:\n  tftp: 1\nboot:\n  bind_tokens: sometimes\n"
    code, lines = check(tmp_path, text)
    assert code == 1
    assert [line.split(": ")[0] for line in lines] == ["c.yaml:2", "c.yaml:3", "c.yaml:4", "c.yaml:7", "c.yaml"]
    assert lines[2] == "c.yaml:4: ports: duplicate key (first set on line 1)"


def test_a_missing_file(tmp_path: Path) -> None:
    code, out, _ = run("config", "check", str(tmp_path / "nope.yaml"))
    assert code == 1 and out.startswith(f"{tmp_path}/nope.yaml: cannot read: No such file")


def test_show_is_the_file_then_every_default(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    code, out, _ = run("config", "show", str(path))
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["address"] == "198.19.0.1" and shown["dhcp"]["mode"] == "full"
    assert shown["ports"]["http"] == 8080 and shown["boot"]["uefi_loader"] == "shim"
    path.write_text("adress: x\n")
    code, _, err = run("config", "show", str(path))
    assert code == 1 and "c.yaml:1: adress: unknown key" in err


def test_defaults_and_reference(tmp_path: Path) -> None:
    code, out, _ = run("config", "defaults")
    assert code == 0 and yaml.safe_load(out)["dhcp"]["lease_seconds"] == 3600
    assert "  # lease time in full mode (>= 60, <= 604800)\n  lease_seconds: 3600\n" in out
    code, out, _ = run("config", "reference")
    assert code == 0 and "| `boot.token_ttl_seconds` | integer (>= 60) | `21600` |" in out
    doc = tmp_path / "c.md"
    doc.write_text("no markers\n")
    code, _, err = run("config", "reference", "--write", str(doc))
    assert code == 2 and "markers are missing" in err


def test_the_example_of_the_docs_is_true(tmp_path: Path) -> None:
    """docs/configuration.md's example file gives exactly the output it shows."""
    text = (REPO / "docs" / "configuration.md").read_text()
    example = text.split("Example:\n\n```yaml\n")[1].split("```\n")[0]
    shown = text.split("$ provision config check provision.yaml\n")[1].split("```\n")[0]
    path = tmp_path / "provision.yaml"
    path.write_text(example)
    code, out, _ = run("config", "check", str(path))
    assert code == 1 and out.replace(f"{tmp_path}/", "") == shown
