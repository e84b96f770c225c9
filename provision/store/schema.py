"""The store's schema as numbered migrations: ``PRAGMA user_version`` says how many ran. A migration is
never edited once it has landed; a change of schema is a new one at the end.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE machines (
        mac TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        boots INTEGER NOT NULL DEFAULT 0,
        vendor TEXT, product TEXT, serial TEXT, recipe TEXT, reason TEXT
    );
    CREATE TABLE boot_tokens (
        token TEXT PRIMARY KEY,
        mac TEXT NOT NULL REFERENCES machines(mac),
        issued_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        via TEXT NOT NULL,
        used_at REAL
    );
    CREATE INDEX boot_tokens_mac ON boot_tokens(mac, issued_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mac TEXT NOT NULL,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_mac ON events(mac, id);
    """,
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        mac TEXT NOT NULL REFERENCES machines(mac),
        recipe TEXT, image TEXT NOT NULL, label TEXT NOT NULL, digest TEXT NOT NULL,
        state TEXT NOT NULL, reason TEXT,
        started REAL NOT NULL, finished REAL,
        bytes_written INTEGER NOT NULL DEFAULT 0, mean_rate REAL
    );
    CREATE INDEX runs_mac ON runs(mac, started);
    CREATE TABLE verifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run TEXT NOT NULL REFERENCES runs(id),
        digest TEXT NOT NULL,
        chunks INTEGER NOT NULL,
        verified INTEGER NOT NULL,
        read_back TEXT NOT NULL CHECK (read_back IN ('ok', 'failed')),
        wipe_method TEXT,
        wipe_ranges TEXT NOT NULL DEFAULT '[]',
        recorded_at REAL NOT NULL
    );
    CREATE INDEX verifications_run ON verifications(run, id);
    """,
    """
    -- issue 12: a token is bound to the address that fetched the boot script; a run to the token that
    -- started it (only a hash is kept) and to the plan it was given (JSON, without the first-boot secret,
    -- which is derived from the run id and the server's key).
    ALTER TABLE boot_tokens ADD COLUMN remote TEXT;
    ALTER TABLE runs ADD COLUMN token_hash TEXT;
    ALTER TABLE runs ADD COLUMN plan TEXT;
    CREATE INDEX runs_token ON runs(token_hash);
    """,
    """
    -- issue 13: the live environment a run's hooks run in (its address and the SSH host key its hello
    -- reported, pinned), the facts its hooks may need (JSON), and each hook's result.
    ALTER TABLE runs ADD COLUMN live_address TEXT;
    ALTER TABLE runs ADD COLUMN host_key TEXT;
    ALTER TABLE runs ADD COLUMN facts TEXT;
    CREATE TABLE hook_results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run TEXT NOT NULL REFERENCES runs(id),
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        place TEXT NOT NULL,
        on_failure TEXT NOT NULL,
        exit_code INTEGER,
        timed_out INTEGER NOT NULL,
        seconds REAL NOT NULL,
        output TEXT NOT NULL,
        output_bytes INTEGER NOT NULL,
        error TEXT,
        recorded_at REAL NOT NULL
    );
    CREATE INDEX hook_results_run ON hook_results(run, position);
    """,
    """
    -- issue 13: the host name each machine got (the hostname hook's parameter, made unique in the store by
    -- the server: -2, -3 ... on a clash), and hook results of a hook run again by hand (provision hooks run).
    ALTER TABLE machines ADD COLUMN hostname TEXT;
    CREATE INDEX machines_hostname ON machines(hostname COLLATE NOCASE);
    ALTER TABLE hook_results ADD COLUMN rerun INTEGER NOT NULL DEFAULT 0;
    """,
    """
    -- issue 14: the dashboard's users (scrypt hashes, provision.passwords) and their sessions (only the hash
    -- of a session's cookie is kept, with its CSRF token); a machine forgotten from the dashboard keeps its
    -- runs and records (forgotten_at: hidden until it is seen again)
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password TEXT NOT NULL,
        created REAL NOT NULL,
        changed REAL NOT NULL
    );
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created REAL NOT NULL,
        seen REAL NOT NULL,
        expires REAL NOT NULL,
        remote TEXT
    );
    CREATE INDEX sessions_user ON sessions(user);
    ALTER TABLE machines ADD COLUMN forgotten_at REAL;
    """,
    """
    -- issue 15: donor data erasure. An erase-only run (a PC that leaves as parts) writes no image (its image,
    -- label and digest are ''); each drive's erasure record as the agent reported it (wire DriveErasure:
    -- its nested parts as JSON), with the operator and the donor's delivery (lot) at the time; the machine's
    -- lot (set from the recipe's rendered erase.lot at hello, or by an operator).
    ALTER TABLE runs ADD COLUMN erase_only INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE machines ADD COLUMN lot TEXT;
    CREATE INDEX machines_lot ON machines(lot);
    CREATE TABLE erasures (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs(id),
        mac TEXT NOT NULL,
        device TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        interface TEXT NOT NULL,
        method TEXT NOT NULL,
        category TEXT NOT NULL CHECK (category IN ('clear', 'purge')),
        ok INTEGER NOT NULL,
        started TEXT NOT NULL,
        ended TEXT NOT NULL,
        verification TEXT,
        vendor TEXT, model TEXT, serial TEXT, firmware TEXT,
        rotational INTEGER,
        passes INTEGER NOT NULL,
        tools TEXT NOT NULL DEFAULT '{}',
        commands TEXT NOT NULL DEFAULT '[]',
        hidden_areas TEXT NOT NULL DEFAULT '{}',
        smart TEXT NOT NULL DEFAULT '{}',
        fallback TEXT,
        reason TEXT,
        errors TEXT NOT NULL DEFAULT '[]',
        operator TEXT NOT NULL,
        lot TEXT,
        recorded_at REAL NOT NULL
    );
    CREATE INDEX erasures_run ON erasures(run_id, id);
    CREATE INDEX erasures_mac ON erasures(mac, id);
    CREATE INDEX erasures_lot ON erasures(lot, id);
    """,
    """
    -- issue 15 (review): each run's erasure as a whole, once: whether it was complete (every drive ok, no
    -- internal drive left out), the disks it left out (JSON list of wire Skipped: device, reason, internal) that
    -- a certificate states as not covered, the operator and the lot. Erasures recorded before this migration
    -- take theirs from their 'erasure' event, where they were kept.
    CREATE TABLE erasure_runs (
        run_id TEXT PRIMARY KEY REFERENCES runs(id),
        mac TEXT NOT NULL,
        ok INTEGER NOT NULL,
        skipped TEXT NOT NULL DEFAULT '[]',
        operator TEXT NOT NULL,
        lot TEXT,
        recorded_at REAL NOT NULL
    );
    INSERT OR IGNORE INTO erasure_runs (run_id, mac, ok, skipped, operator, lot, recorded_at)
        SELECT json_extract(detail, '$.run'), mac, COALESCE(json_extract(detail, '$.ok'), 0),
               COALESCE(json_extract(detail, '$.skipped'), '[]'), COALESCE(json_extract(detail, '$.operator'),
               'unknown'), json_extract(detail, '$.lot'), at
        FROM events WHERE kind = 'erasure' AND json_extract(detail, '$.run') IN (SELECT id FROM runs) ORDER BY id;
    """,
    """
    -- issue 18: where a machine goes (school, family, association, recycling: provision.states.Destination),
    -- for the city's report: the destination each run's recipe gave, recorded with the run, and the machine's
    -- own, set by an operator (it wins over the recipe's).
    ALTER TABLE runs ADD COLUMN destination TEXT;
    ALTER TABLE machines ADD COLUMN destination TEXT;
    """,
    """
    -- issue 16: how each run's chunks came (the agent's wire TransferReport as JSON: mode, bytes by multicast
    -- and by HTTP, repairs, datagrams lost), recorded with its report; NULL: the run reported none (before
    -- multicast, or it never reported).
    ALTER TABLE runs ADD COLUMN transfer TEXT;
    """,
    """
    -- issue 17: delta re-imaging. The version a run's machine held when it was planned (held_run: the run that
    -- verified it; held_digest, held_label) and the prediction (predicted_bytes: plain bytes of the chunks not
    -- expected right, predicted_download: their stored frames); NULL: nothing held (a blank disk). What the run
    -- did, from its report: fetched_bytes (compressed bytes received, every chunk source), verified_bytes (plain
    -- data bytes read back right) and target (the disk its agent wrote, as the agent named it).
    ALTER TABLE runs ADD COLUMN held_run TEXT;
    ALTER TABLE runs ADD COLUMN held_digest TEXT;
    ALTER TABLE runs ADD COLUMN held_label TEXT;
    ALTER TABLE runs ADD COLUMN predicted_bytes INTEGER;
    ALTER TABLE runs ADD COLUMN predicted_download INTEGER;
    ALTER TABLE runs ADD COLUMN fetched_bytes INTEGER;
    ALTER TABLE runs ADD COLUMN verified_bytes INTEGER;
    ALTER TABLE runs ADD COLUMN target TEXT;
    """,
    """
    -- issue 17: capture (docs/capture.md). A capture asked for a machine (provision image capture MAC --name NAME):
    -- one pending request per machine, consumed when its capture run starts. A capture run names the image it
    -- captures (runs.capture; NULL: any other run), its digest and label filled when the version is published;
    -- capture_runs keeps its chunk size, the disk's size (fixed at the first offer) and what was uploaded;
    -- capture_chunks each offered position's sha256 (NULL: a hole); capture_asked the sha256s the server asked
    -- for (uploaded: stored since).
    CREATE TABLE capture_requests (
        mac TEXT PRIMARY KEY,
        image TEXT NOT NULL,
        requested_at REAL NOT NULL,
        requested_by TEXT NOT NULL,
        target_disk TEXT NOT NULL DEFAULT '{}'
    );
    ALTER TABLE runs ADD COLUMN capture TEXT;
    CREATE TABLE capture_runs (
        run_id TEXT PRIMARY KEY REFERENCES runs(id),
        image TEXT NOT NULL,
        chunk_size INTEGER NOT NULL,
        disk_size INTEGER,
        requested_by TEXT,
        uploaded_chunks INTEGER NOT NULL DEFAULT 0,
        uploaded_bytes INTEGER NOT NULL DEFAULT 0,
        new_chunks INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE capture_chunks (
        run_id TEXT NOT NULL REFERENCES runs(id),
        position INTEGER NOT NULL,
        sha256 TEXT,
        PRIMARY KEY (run_id, position)
    );
    CREATE TABLE capture_asked (
        run_id TEXT NOT NULL REFERENCES runs(id),
        sha256 TEXT NOT NULL,
        uploaded INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, sha256)
    );
    """,
)
