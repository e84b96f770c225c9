"""Every log line about a machine names it: a real ``provision serve`` (proxyDHCP, HTTP) images one PC (a DHCP
discover, its boot script, the agent's hello, progress and report, in this process), and each line the server
wrote meanwhile carries its MAC or its run id; under systemd (``JOURNAL_STREAM`` set) with a syslog priority
prefix and no time stamp. A TFTP transfer's lines carry the MAC its client address has in the neighbour table.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import tftpy

from provision.agent.main import EXIT_DONE
from provision.logcontext import ContextFilter, JournalFormatter
from provision.tftp import TftpService
from tests.support.runs import Site, in_process, make_site
from tests.support.wait import wait_for

MAC = "52:54:00:6c:0b:01"
LINE = re.compile(r"<[2-7]>provision[\w.]*: \S")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.setenv("JOURNAL_STREAM", "8:4242")  # what systemd sets: the server's stderr is the journal
    with make_site(tmp_path, dhcp=True) as site:
        yield site


def test_every_line_of_a_machine_s_run_carries_its_mac_or_run(site: Site, tmp_path: Path) -> None:
    started = len(site.server.log())
    site.netboot(MAC)
    outcome = in_process(site, tmp_path, MAC)
    assert outcome.code == EXIT_DONE, outcome
    [run] = site.runs(MAC)
    wait_for(lambda: f"run {run['id']} done" in site.server.log(), 10)
    lines = site.server.log()[started:].splitlines()
    assert len(lines) >= 4, lines  # the DHCP offer, the boot script, hello, the end of the run
    for line in lines:
        assert LINE.match(line), line
        assert f"mac={MAC} " in line or f"run={run['id']} " in line, line
    assert any(line.startswith("<6>provision.dhcp") and f"mac={MAC} " in line for line in lines), lines
    assert any(line.startswith("<6>provision.boot") and f"mac={MAC} " in line for line in lines), lines
    assert any(f"mac={MAC} run={run['id']} " in line for line in lines), lines
    assert not any(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", line) for line in lines), "journald adds the time itself"


@pytest.fixture
def journal() -> Iterator[io.StringIO]:
    """What the TFTP service logs, as the journal handler writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JournalFormatter())
    logger = logging.getLogger("provision.tftp")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_tftp_transfer_s_lines_carry_the_client_s_mac(tmp_path: Path, journal: io.StringIO) -> None:
    (tmp_path / "undionly.kpxe").write_bytes(b"x" * 5000)
    asked: list[str] = []

    def neighbours(ip: str) -> str | None:
        asked.append(ip)
        return MAC if ip == "127.0.0.1" else None

    with TftpService(tmp_path, "127.0.0.1", 0, client_mac=neighbours) as service:
        start = len(journal.getvalue())
        got = io.BytesIO()
        tftpy.TftpClient("127.0.0.1", service.port, options={"blksize": 512}, flock=False).download(
            "undionly.kpxe", got, timeout=5
        )
        assert got.getvalue() == b"x" * 5000
        wait_for(lambda: "sent undionly.kpxe" in journal.getvalue(), 5)
        lines = journal.getvalue()[start:].splitlines()
        missing = tftpy.TftpClient("127.0.0.1", service.port, flock=False)
        with pytest.raises(tftpy.TftpException):
            missing.download("nothing-here", io.BytesIO(), timeout=5)
        refused = journal.getvalue().splitlines()[-1]
    assert asked == ["127.0.0.1", "127.0.0.1"]  # once per request, not per packet
    assert lines and all(f"mac={MAC} " in line for line in lines), lines
    assert refused.startswith("<6>provision.tftp: mac=") and "'nothing-here' refused" in refused, refused
