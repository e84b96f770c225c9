"""provision.backup: what a backup holds (modes, sha256s, what is left out), a consistent database copy taken
while threads write through the Store, and every refusal of restore (non-empty folder, a corrupt or altered
file, a newer schema, differing files outside the state folder)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provision.backup import (
    BackupError,
    check_database,
    dated_folder,
    prune_backups,
    read_manifest,
    restore_backup,
    take_backup,
    verify_backup,
)
from provision.backup.manifest import hash_file
from provision.config import ServerConfig, load_config
from provision.credentials import load_or_create_key
from provision.store import MIGRATIONS, Store
from tests.support.cli import run

MACS = [f"52:54:00:00:01:{i:02x}" for i in range(10)]


def make_state(tmp_path: Path, **config: object) -> ServerConfig:
    """A state folder as a server leaves it: the database, the keys (0600 in 0700 folders), a probe, leases, a
    FIFO (gpg-agent's sockets are not files either), an image store, a repository and a boot root inside it."""
    state = tmp_path / "state"
    cfg = load_config(None, {"state_dir": str(state), "boot_root": str(state / "boot"), **config})
    with Store(state / "provision.db") as store:
        store.seen(MACS[0])
    load_or_create_key(state / "secrets" / "server.key")
    (state / "keys").mkdir(mode=0o700)
    (state / "keys" / "certificates_ed25519").write_bytes(b"PRIVATE")
    (state / "keys" / "certificates_ed25519").chmod(0o600)
    (state / "probes" / "525400000100").mkdir(parents=True)
    (state / "probes" / "525400000100" / "lsblk.json").write_text("{}")
    (state / "leases.json").write_text("[]")
    os.mkfifo(state / "secrets" / "S.gpg-agent")
    for folder in ("images", "repo", "boot"):
        (state / folder).mkdir()
        (state / folder / "big").write_bytes(b"\0" * 4096)
    (state / "images" / ".tmp-chunk").write_bytes(b"half written")  # the image store's atomic writes
    return cfg


def files_of(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_a_backup_holds_the_state_with_modes_and_sha256s(tmp_path: Path) -> None:
    cfg = make_state(tmp_path)
    manifest = take_backup(cfg, tmp_path / "b")
    listed = {f.path: f for f in manifest.files}
    assert set(listed) == {"state/provision.db", "state/secrets/server.key", "state/keys/certificates_ed25519",
                           "state/probes/525400000100/lsblk.json", "state/leases.json"}  # fmt: skip
    assert files_of(tmp_path / "b") == {*listed, "manifest.json"}  # no WAL, FIFO, images, repo, boot root
    assert listed["state/secrets/server.key"].mode == 0o600
    assert (tmp_path / "b" / "state" / "secrets" / "server.key").stat().st_mode & 0o777 == 0o600
    assert manifest.dirs["state/secrets"] == 0o700 and manifest.schema_version == len(MIGRATIONS)
    data = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert (data["format"], data["with_images"], data["roots"]) == (1, False, {"state": str(cfg.state_dir)})
    assert verify_backup(tmp_path / "b") == read_manifest(tmp_path / "b")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.partial")]

    with_images = take_backup(cfg, tmp_path / "bi", with_images=True)
    saved = {f.path for f in with_images.files}
    assert "state/images/big" in saved and "state/images/.tmp-chunk" not in saved and with_images.with_images


def test_the_copy_is_one_consistent_snapshot_while_threads_write(tmp_path: Path) -> None:
    cfg = make_state(tmp_path)
    store = Store(cfg.state_dir / "provision.db")
    stop = threading.Event()

    def agent(mac: str) -> None:
        while not stop.is_set():
            store.issue_token(mac, "ipxe", 60)
            store.event(mac, "progress", {"stage": "writing"})

    threads = [threading.Thread(target=agent, args=(mac,)) for mac in MACS]
    for thread in threads:
        thread.start()
    try:
        while len(store.events(limit=100_000)) < 200:
            stop.wait(0.01)
        take_backup(cfg, tmp_path / "b")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    live = store.events(limit=100_000)
    restore_backup(tmp_path / "b", tmp_path / "restored")
    assert check_database(tmp_path / "restored" / "provision.db") == len(MIGRATIONS)
    with Store(tmp_path / "restored" / "provision.db") as restored:
        copied = restored.events(limit=100_000)
        assert 200 <= len(copied) < len(live)
        assert copied == live[: len(copied)]  # a prefix: every transaction whole, none after the snapshot
        boots = sum(m.boots for m in restored.machines())
        assert boots == sum(1 for e in copied if e.kind == "boot")
    store.close()


def test_restore_writes_modes_and_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    cfg = make_state(tmp_path)
    take_backup(cfg, tmp_path / "b")
    target = tmp_path / "new"
    done = restore_backup(tmp_path / "b", target)
    assert len(done.written) == 5 and done.kept == []
    assert (target / "secrets" / "server.key").read_bytes() == (cfg.state_dir / "secrets" / "server.key").read_bytes()
    assert (target / "secrets" / "server.key").stat().st_mode & 0o777 == 0o600
    assert (target / "secrets").stat().st_mode & 0o777 == 0o700
    with pytest.raises(BackupError, match="not empty: restore into a new state folder"):
        restore_backup(tmp_path / "b", target)
    (target / "provision.db-wal").write_bytes(b"another database's log")
    restore_backup(tmp_path / "b", target, force=True)
    assert not (target / "provision.db-wal").exists()
    check_database(target / "provision.db")


def test_an_altered_backup_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    cfg = make_state(tmp_path)
    take_backup(cfg, tmp_path / "b")
    (tmp_path / "b" / "state" / "leases.json").write_text("[1]")
    (tmp_path / "b" / "state" / "keys" / "certificates_ed25519").unlink()
    with pytest.raises(BackupError) as exc:
        restore_backup(tmp_path / "b", tmp_path / "new")
    assert "2 file(s) differ from the manifest" in str(exc.value)
    assert "state/leases.json: 3 bytes" in str(exc.value) and "certificates_ed25519: cannot be read" in str(exc.value)
    assert not (tmp_path / "new").exists()


def test_manifests_that_cannot_be_restored(tmp_path: Path) -> None:
    cfg = make_state(tmp_path)
    with pytest.raises(BackupError, match="no manifest: not a backup folder"):
        restore_backup(tmp_path, tmp_path / "new")
    take_backup(cfg, tmp_path / "b")
    manifest = tmp_path / "b" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "schema_version": len(MIGRATIONS) + 1}))  # the database's is not
    with pytest.raises(BackupError, match=f"schema version {len(MIGRATIONS)}, the manifest says {len(MIGRATIONS) + 1}"):
        restore_backup(tmp_path / "b", tmp_path / "new")
    copy = tmp_path / "b" / "state" / "provision.db"
    with sqlite3.connect(copy) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    size, sha = hash_file(copy)
    files = [{**f, "size": size, "sha256": sha} if f["path"] == "state/provision.db" else f for f in data["files"]]
    manifest.write_text(json.dumps({**data, "schema_version": len(MIGRATIONS) + 1, "files": files}))
    with pytest.raises(BackupError, match=f"schema version {len(MIGRATIONS) + 1}; this provision knows"):
        restore_backup(tmp_path / "b", tmp_path / "new")
    manifest.write_text(json.dumps({**data, "files": [f for f in data["files"] if f["path"] != "state/provision.db"]}))
    with pytest.raises(BackupError, match=r"the manifest lists no state/provision\.db"):
        restore_backup(tmp_path / "b", tmp_path / "new")
    manifest.write_text(json.dumps({**data, "format": 2}))
    with pytest.raises(BackupError, match="format 2; this provision reads format 1"):
        restore_backup(tmp_path / "b", tmp_path / "new")
    manifest.write_text(json.dumps({**data, "files": [{**data["files"][0], "path": "state/../../etc/passwd"}]}))
    with pytest.raises(BackupError, match="is not ROOT/relative"):
        restore_backup(tmp_path / "b", tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_a_backup_never_leaves_half_a_folder(tmp_path: Path) -> None:
    cfg = make_state(tmp_path)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    with pytest.raises(BackupError, match="exists and is not empty"):
        take_backup(cfg, tmp_path / "b")
    (cfg.state_dir / "provision.db").rename(tmp_path / "elsewhere.db")
    with pytest.raises(BackupError, match="no database"):
        take_backup(cfg, tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "elsewhere.db", "state"]
    (tmp_path / "elsewhere.db").write_bytes(b"not a database" * 100)
    with pytest.raises(BackupError, match="not a readable database"):
        check_database(tmp_path / "elsewhere.db")
    with pytest.raises(sqlite3.Error):
        sqlite3.connect(tmp_path / "elsewhere.db").execute("SELECT * FROM machines")


def test_files_outside_the_state_go_back_where_they_were(tmp_path: Path) -> None:
    keys = tmp_path / "etc"
    keys.mkdir()
    (keys / "id_ed25519").write_bytes(b"SSH PRIVATE")
    (keys / "id_ed25519").chmod(0o600)
    (keys / "id_ed25519.pub").write_bytes(b"ssh-ed25519 AAAA")
    config = keys / "provision.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nhooks:\n  ssh_key: {keys / 'id_ed25519'}\n")
    cfg = make_state(tmp_path, hooks={"ssh_key": str(keys / "id_ed25519")})
    manifest = take_backup(cfg, tmp_path / "b", config_file=config)
    assert manifest.roots["ssh_key"] == str(keys / "id_ed25519") and manifest.roots["config"] == str(config)
    assert {"ssh_key/id_ed25519", "ssh_key/id_ed25519.pub", "config/provision.yaml"} <= {f.path for f in manifest.files}

    done = restore_backup(tmp_path / "b", tmp_path / "new")  # the same files still there: kept
    assert sorted(p.name for p in done.kept) == ["id_ed25519", "id_ed25519.pub", "provision.yaml"]
    (keys / "id_ed25519").unlink()
    config.write_text("state_dir: /elsewhere\n")
    with pytest.raises(
        BackupError, match=f"1 file\\(s\\) outside the state folder exist with other contents: {config}"
    ):
        restore_backup(tmp_path / "b", tmp_path / "newer")
    done = restore_backup(tmp_path / "b", tmp_path / "newer", config_to=tmp_path / "restored.yaml")
    assert (keys / "id_ed25519").read_bytes() == b"SSH PRIVATE" and (
        keys / "id_ed25519"
    ).stat().st_mode & 0o777 == 0o600
    assert done.config_file == tmp_path / "restored.yaml" and "ssh_key" in (tmp_path / "restored.yaml").read_text()
    restore_backup(tmp_path / "b", tmp_path / "newest", force=True)
    assert config.read_text().startswith(f"state_dir: {tmp_path / 'state'}")


def test_the_commands(tmp_path: Path) -> None:
    cfg = make_state(tmp_path)  # with only --state-dir, the boot root is not state/boot: that one is saved too
    code, out, err = run("backup", str(tmp_path / "b"), "--state-dir", str(cfg.state_dir))
    assert code == 0, err
    assert out.startswith(f"{tmp_path / 'b'}: backup of {cfg.state_dir}: 6 files, ") and "integrity ok" in out
    code, out, err = run("restore", str(tmp_path / "b"), "--state-dir", str(tmp_path / "new"))
    assert code == 0, err
    assert f"restored into {tmp_path / 'new'}: 6 files written; database schema {len(MIGRATIONS)}" in out
    code, out, err = run("restore", str(tmp_path / "b"))  # where it was: not empty
    assert code == 1 and f"provision: error: {cfg.state_dir}: not empty" in err
    code, out, err = run("backup", str(tmp_path / "b"), "--state-dir", str(cfg.state_dir))
    assert code == 1 and "exists and is not empty" in err


def test_dated_backups_and_keeping_the_newest(tmp_path: Path) -> None:
    cfg = make_state(tmp_path)
    parent = tmp_path / "backups"
    for day in (1, 2):
        take_backup(cfg, dated_folder(parent, datetime(2026, 12, day, 2, 30, tzinfo=UTC)))
    (parent / "provision-notes").mkdir()  # no manifest: not a backup, never removed
    (parent / "other").mkdir()
    (parent / "provision-20000101T000000Z").symlink_to(parent / "provision-20261201T023000Z")  # not ours: kept
    code, out, err = run("backup", str(parent), "--dated", "--keep", "2", "--state-dir", str(cfg.state_dir))
    assert code == 0, err
    [made] = [line.split(":")[0] for line in out.splitlines() if "backup of" in line]
    assert Path(made).parent == parent and Path(made).name.startswith("provision-20")
    assert out.splitlines()[1:] == [f"{parent / 'provision-20261201T023000Z'}: removed (older than the 2 kept)"]
    assert sorted(p.name for p in parent.iterdir()) == sorted(
        ["provision-20261202T023000Z", Path(made).name, "provision-notes", "other", "provision-20000101T000000Z"]
    )
    with pytest.raises(BackupError, match="at least the newest"):
        prune_backups(parent, 0)
    code, _, err = run("backup", str(parent), "--keep", "2", "--state-dir", str(cfg.state_dir))
    assert code == 2 and "it goes with --dated" in err


def test_an_image_store_outside_the_state_with_images(tmp_path: Path) -> None:
    store = tmp_path / "srv-images"
    (store / "chunks" / "ab").mkdir(parents=True)
    (store / "chunks" / "ab" / "abcd.zst").write_bytes(b"chunk")
    cfg = make_state(tmp_path, image_store=str(store))
    assert "images" not in take_backup(cfg, tmp_path / "b").roots  # not without --with-images
    manifest = take_backup(cfg, tmp_path / "bi", with_images=True)
    assert manifest.roots["images"] == str(store) and "images/chunks/ab/abcd.zst" in {f.path for f in manifest.files}
    assert "state/images/big" in {f.path for f in manifest.files}  # state/images is not the store here: state
    (store / "chunks" / "ab" / "abcd.zst").unlink()
    done = restore_backup(tmp_path / "bi", tmp_path / "new")
    assert (
        store / "chunks" / "ab" / "abcd.zst"
    ).read_bytes() == b"chunk" and store / "chunks/ab/abcd.zst" in done.written


def test_a_crafted_manifest_writes_nowhere_but_its_roots(tmp_path: Path) -> None:
    """Restore writes a root's files back at the manifest's path: a root no backup makes, a relative root or a
    file deeper than a one-file root's own name is refused before anything is written; no mode gets setuid."""
    keys = tmp_path / "etc"
    keys.mkdir()
    (keys / "id_ed25519").write_bytes(b"SSH PRIVATE")
    cfg = make_state(tmp_path, hooks={"ssh_key": str(keys / "id_ed25519")})
    take_backup(cfg, tmp_path / "b")
    manifest = tmp_path / "b" / "manifest.json"
    data = json.loads(manifest.read_text())
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "b" / "cron" / "d").mkdir(parents=True)
    (tmp_path / "b" / "cron" / "d" / "x").write_bytes(b"SSH PRIVATE")
    (tmp_path / "b" / "ssh_key" / "sub").mkdir()
    (tmp_path / "b" / "ssh_key" / "sub" / "x").write_bytes(b"SSH PRIVATE")
    key = next(f for f in data["files"] if f["path"] == "ssh_key/id_ed25519")
    crafted = {
        "cron/d/x": {**data, "roots": {**data["roots"], "cron": str(elsewhere)},
                     "files": [*data["files"], {**key, "path": "cron/d/x"}]},
        "ssh_key/sub/x": {**data, "files": [*data["files"], {**key, "path": "ssh_key/sub/x"}]},
        "relative": {**data, "roots": {**data["roots"], "ssh_key": "etc/id_ed25519"}},
        "unrooted": {**data, "roots": {"state": data["roots"]["state"]}},
    }  # fmt: skip
    for name, content in crafted.items():
        manifest.write_text(json.dumps(content))
        with pytest.raises(BackupError, match="not a backup manifest"):
            restore_backup(tmp_path / "b", tmp_path / "new")
        assert not (tmp_path / "new").exists() and not elsewhere.exists(), name
    assert not (keys / "sub").exists()
    files = [{**f, "mode": "4755"} if f["path"] == "state/leases.json" else f for f in data["files"]]
    manifest.write_text(json.dumps({**data, "files": files, "dirs": {**data["dirs"], "state/keys": "2770"}}))
    restore_backup(tmp_path / "b", tmp_path / "new")
    assert (tmp_path / "new" / "leases.json").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "new" / "keys").stat().st_mode & 0o7777 == 0o770


@pytest.mark.parametrize("name", ["state#1", "state?x", "100%"])
def test_a_state_folder_named_with_uri_characters(tmp_path: Path, name: str) -> None:
    """SQLite opens the database by URI: a '#', '?' or '%' in a folder's name is quoted, not a fragment or query
    (the copy was an empty database made at the name's head)."""
    cfg = make_state(tmp_path / name)
    manifest = take_backup(cfg, tmp_path / "b")
    assert manifest.schema_version == len(MIGRATIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "b"])
    restored = restore_backup(tmp_path / "b", tmp_path / "new#2")
    with Store(restored.state_dir / "provision.db") as store:
        assert [m.mac for m in store.machines()] == [MACS[0]]


def test_restore_force_refuses_a_database_in_use(tmp_path: Path) -> None:
    """--force writes over a state folder, its WAL removed: never under a server that still has it open."""
    cfg = make_state(tmp_path)
    take_backup(cfg, tmp_path / "b")
    target = tmp_path / "old"
    with Store(target / "provision.db") as serving:
        serving.seen(MACS[1])
        with pytest.raises(BackupError, match=r"in use .*: stop the server first"):
            restore_backup(tmp_path / "b", target, force=True)
        assert serving.machine(MACS[1]) is not None  # untouched
    restore_backup(tmp_path / "b", target, force=True)
    with Store(target / "provision.db") as store:
        assert [m.mac for m in store.machines()] == [MACS[0]]


def test_a_symlinked_configuration_is_restored_where_its_contents_were(tmp_path: Path) -> None:
    """/etc/provision/provision.yaml a link to a file of another name: the backup names the file by its real
    name, so restore writes it back there (it wrote a new file under the link's name beside it)."""
    real = tmp_path / "srv" / "site.yaml"
    real.parent.mkdir()
    real.write_text(f"state_dir: {tmp_path / 'state'}\n")
    link = tmp_path / "provision.yaml"
    link.symlink_to(real)
    cfg = make_state(tmp_path)
    manifest = take_backup(cfg, tmp_path / "b", config_file=link)
    assert manifest.roots["config"] == str(real) and "config/site.yaml" in {f.path for f in manifest.files}
    real.unlink()
    done = restore_backup(tmp_path / "b", tmp_path / "new")
    assert done.config_file == real and real.read_text() == f"state_dir: {tmp_path / 'state'}\n"
    assert sorted(p.name for p in real.parent.iterdir()) == ["site.yaml"]
