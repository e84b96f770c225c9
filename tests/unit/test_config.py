"""Server configuration: defaults, file, flags on top, located errors."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from provision.config import DhcpMode, UefiLoader, load_config
from provision.errors import ConfigError


def test_defaults_run_the_demo():
    cfg = load_config()
    assert cfg.address == IPv4Address("198.18.0.1")
    assert cfg.dhcp.mode is DhcpMode.PROXY and cfg.boot.uefi_loader is UefiLoader.SHIM
    assert cfg.http_url == "http://198.18.0.1:8080"
    assert (cfg.templates_dir / "boot.ipxe.j2").is_file()


def test_file_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "address: 198.18.5.1\nports:\n  http: 9000\ndhcp:\n  mode: full\n  range_start: 198.18.5.100\n"
        "  range_end: 198.18.5.200\n"
    )
    cfg = load_config(path, {"ports": {"tftp": 0}})
    assert (cfg.address, cfg.ports.http, cfg.ports.tftp, cfg.dhcp.mode) == (
        IPv4Address("198.18.5.1"),
        9000,
        0,
        DhcpMode.FULL,
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("adress: 198.18.0.1\n", "c.yaml:1: adress: unknown key"),
        ("ports:\n  http: 70000\n", "c.yaml:2: ports.http: Input should be less than or equal to 65535"),
        ("dhcp:\n  mode: full\n", "c.yaml:1: dhcp: full DHCP needs"),
        ("address: [1\n", "c.yaml:2: YAML syntax error"),
        ("boot:\n  unknown: maybe\n", "c.yaml:2: boot.unknown: Input should be"),
    ],
)
def test_located_errors(tmp_path, text, where):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    shown = [str(p).replace(str(tmp_path) + "/", "") for p in exc.value.problems]
    assert any(s.startswith(where) for s in shown), shown
