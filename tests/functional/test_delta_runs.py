"""Delta re-imaging end to end (docs/delta.md): ``provision serve`` as a process on 127.0.0.1 and the agent as
``python -m provision.agent`` processes, files standing in for disks. A PC imaged with version 1 of ``educ``;
version 2 (three chunks changed) imported; the PC re-imaged: its plan names version 1 and the predicted
bytes, the agent fetches exactly the changed chunks, the run records predicted, fetched and verified bytes,
``provision runs`` shows them, and the disk is version 2. A PC whose disk was written on after version 1 fetches
more than predicted and still ends verified."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.agent.main import EXIT_DONE
from provision.images import ImageStore, ImageVersion
from provision.store import Store
from provision.wire import paths
from provision.wire.api import Hello
from tests.support.chunk_server import SIZE, target_sha
from tests.support.delta import CHANGED, changed_disk, import_v2
from tests.support.files import sha256_file
from tests.support.images import CHUNK, MiB
from tests.support.paths import REPO, SAMPLE_PROBE
from tests.support.runs import AGENT_ENV, Site, agent_process, disks, make_site, result


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with make_site(tmp_path) as site:
        yield site


def image(site: Site, mac: str, folder: Path) -> dict[str, Any]:
    """One network boot of the PC and its agent's run to the end: the run as the API gives it."""
    code, last, err = result(agent_process(site.url, mac, site.token(mac), folder))
    assert code == EXIT_DONE and " done " in last, err
    run: dict[str, Any] = site.runs(mac)[-1]
    assert run["state"] == "done", run
    return run


def reimage(site: Site, mac: str) -> None:
    """An operator's 're-image' on the machine (the dashboard's action), so its next boot runs the agent."""
    with Store(site.server.state_dir / "provision.db") as store:
        store.operator_action(mac, "reimage", "test")


def changed_chunks(old: ImageVersion, new: ImageVersion) -> list[int]:
    """Positions of ``new``'s data chunks that are not ``old``'s at the same place."""
    pairs = zip(old.index.chunks, new.index.chunks, strict=True)
    return [i for i, (a, b) in enumerate(pairs) if b.sha256 is not None and a != b]


def stored(store: ImageStore, version: ImageVersion, positions: list[int]) -> int:
    """Compressed bytes of the distinct stored chunks at ``positions``."""
    shas = {version.index.chunks[i].sha256 for i in positions}
    return sum(store.chunks.path(sha).stat().st_size for sha in shas if sha is not None)


def provision(site: Site, *argv: str) -> str:
    """``provision ARGV --state-dir`` (the server's) as a technician runs it beside the server: its output."""
    done = subprocess.run([sys.executable, "-m", "provision", *argv, "--state-dir", str(site.server.state_dir)],
                          capture_output=True, text=True, env=AGENT_ENV, cwd=REPO, timeout=60, check=True)  # fmt: skip
    return done.stdout


def test_a_pc_holding_version_1_fetches_exactly_the_chunks_version_2_changed(site: Site, tmp_path: Path) -> None:
    mac = "52:54:00:de:17:10"
    store = ImageStore(tmp_path / "store")
    v1 = site.version
    folder = disks(tmp_path / "pc", ("vda", SIZE, None))
    first = image(site, mac, folder)
    whole = stored(store, v1, [i for i, c in enumerate(v1.index.chunks) if c.sha256 is not None])
    assert first["held_digest"] is None and first["predicted_download"] is None
    assert (first["fetched_bytes"], first["verified_bytes"]) == (whole, v1.index.mapped_bytes)
    assert first["target"] == str(folder / "vda")

    v2 = import_v2(store, tmp_path / "master.img")
    changed = changed_chunks(v1, v2)
    assert len(changed) == len(CHANGED)
    reimage(site, mac)
    second = image(site, mac, folder)
    predicted = stored(store, v2, changed)
    assert (second["digest"], second["held_digest"], second["held_label"]) == (v2.digest, v1.digest, v1.label)
    assert second["held_run"] == first["id"]
    assert second["predicted_download"] == predicted and second["predicted_bytes"] == len(changed) * CHUNK
    assert second["fetched_bytes"] == predicted  # exactly the changed chunks came
    assert second["bytes_written"] == second["predicted_bytes"]
    assert second["verified_bytes"] == v2.index.mapped_bytes
    assert second["transfer"]["mode"] == "unicast" and second["transfer"]["bytes_http"] == predicted
    [_, write] = site.events(mac, "write")
    assert (write["fetched"], write["skipped"]) == (len(changed), site.data_chunks - len(changed))
    assert target_sha(folder / "vda") == sha256_file(tmp_path / "v2.img")
    text = provision(site, "runs", mac)
    mib = 2**20
    line = (f"held {v1.label}: predicted {predicted / mib:.1f} MiB ({len(changed) * CHUNK / mib:.1f} MiB to write), "
            f"fetched {predicted / mib:.1f} MiB of {v2.index.mapped_bytes / mib:.1f} MiB verified")  # fmt: skip
    assert line in text, text
    assert f"nothing held: fetched {whole / mib:.1f} MiB" in text, text
    # the machine page (it answered 500 for any run whose transfer report left out a field: fixed with this test)
    page = {
        lang: requests.get(f"{site.url}/machines/{mac}", params={"lang": lang}, timeout=10) for lang in ("en", "fr")
    }
    assert all(p.status_code == 200 for p in page.values())
    assert f"held {v1.label}: predicted " in page["en"].text and "nothing held on the disk: fetched " in page["en"].text
    assert f"le disque contenait {v1.label} : " in page["fr"].text and "rien de connu sur le disque" in page["fr"].text
    report = provision(site, "report", "--json", "--from", "2000-01-01")
    total = json.loads(report)["total"]
    saved = v2.index.mapped_bytes - len(changed) * CHUNK
    assert (total["imaged"], total["delta_runs"], total["bytes_delta_saved"]) == (2, 1, saved)
    assert total["bytes_http"] == whole + predicted  # what came over the wire, both runs
    assert "bytes saved by delta: " in provision(site, "report", "--from", "2000-01-01")
    metrics = dict(line.rsplit(" ", 1) for line in requests.get(f"{site.url}/metrics", timeout=10).text.splitlines()
                   if line and not line.startswith("#"))  # fmt: skip
    for kind, value in (("predicted", predicted), ("fetched", predicted), ("verified", v2.index.mapped_bytes)):
        assert float(metrics[f'provision_delta_bytes_total{{kind="{kind}"}}']) == value
    assert float(metrics['provision_transfer_bytes_total{transfer="http"}']) == whole + predicted
    print(f"delta figures: image {v2.index.mapped_bytes} bytes of data ({whole} stored), predicted {predicted}, "
          f"fetched {second['fetched_bytes']}, {len(changed)} of {site.data_chunks} chunks")  # fmt: skip


def test_a_disk_written_on_after_version_1_fetches_more_than_predicted_and_ends_verified(
    site: Site, tmp_path: Path
) -> None:
    mac = "52:54:00:de:17:11"
    store = ImageStore(tmp_path / "store")
    v1 = site.version
    folder = disks(tmp_path / "pc", ("vda", SIZE, None))
    image(site, mac, folder)
    v2 = import_v2(store, tmp_path / "master.img")
    written = (5 * MiB + 10, 7 * MiB + 2 * CHUNK)  # a user's writes, in two chunks version 2 did not change
    changed_disk(folder / "vda", folder / "vda.tmp", written).replace(folder / "vda")
    touched = sorted({offset // CHUNK for offset in written})
    assert not set(touched) & set(changed_chunks(v1, v2))
    reimage(site, mac)
    run = image(site, mac, folder)
    changed = changed_chunks(v1, v2)
    assert run["held_digest"] == v1.digest and run["predicted_download"] == stored(store, v2, changed)
    assert run["fetched_bytes"] == stored(store, v2, changed + touched) > run["predicted_download"]
    assert run["bytes_written"] == (len(changed) + len(touched)) * CHUNK
    [verification] = site.runs(mac)[-1]["verifications"]
    assert verification["complete"] and run["verified_bytes"] == v2.index.mapped_bytes
    assert target_sha(folder / "vda") == hashlib.sha256((tmp_path / "v2.img").read_bytes()[:SIZE]).hexdigest()


def test_an_agent_older_than_delta_gets_a_plan_without_held_and_the_run_keeps_its_prediction(
    site: Site, tmp_path: Path
) -> None:
    """A live environment built before delta re-imaging refuses a plan key it does not know: a hello without
    ``delta`` gets no ``held`` (the server still records what the machine holds); the agent's own hello does."""
    mac = "52:54:00:de:17:30"
    store = ImageStore(tmp_path / "store")
    v1 = site.version
    image(site, mac, disks(tmp_path / "pc", ("vda", SIZE, None)))
    import_v2(store, tmp_path / "master.img")
    reimage(site, mac)
    probe = {p.name: p.read_text() for p in SAMPLE_PROBE.iterdir() if p.is_file() and p.name != "README"}
    old = Hello(mac, site.token(mac), probe=probe).to_dict()
    assert "delta" not in old
    answer = requests.post(f"{site.url}{paths.HELLO}", json=old, timeout=30).json()
    assert answer["action"] == "image" and "held" not in answer["plan"], answer
    run = site.runs(mac)[-1]
    assert (run["id"], run["held_digest"]) == (answer["run"], v1.digest)
    # the agent of this version says delta: the same run's plan (a repeated hello) names what the disk holds
    again = requests.post(f"{site.url}{paths.HELLO}", json={**old, "delta": True}, timeout=30).json()
    assert again["run"] == answer["run"] and again["plan"]["held"]["digest"] == v1.digest, again
