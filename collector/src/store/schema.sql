-- Invigilator collector schema (SQLite). Times are microseconds since the Unix epoch, UTC.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS enrollment_tokens (
    token_id    TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,          -- SHA-256 of the secret; the secret itself is never stored
    grp         TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    uses_left   INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS agents (
    agent_id        TEXT PRIMARY KEY,   -- UUID, the common name of the agent's certificate
    grp             TEXT NOT NULL,
    hostname        TEXT NOT NULL,
    os              TEXT NOT NULL,
    agent_version   TEXT NOT NULL,
    enrolled_at     INTEGER NOT NULL,
    cert_serial     TEXT NOT NULL,
    cert_not_after  INTEGER NOT NULL,
    last_seen       INTEGER,
    revoked_at      INTEGER,
    spool_depth     INTEGER NOT NULL DEFAULT 0,
    dropped_total   INTEGER NOT NULL DEFAULT 0,
    last_seq        INTEGER NOT NULL DEFAULT 0,
    process_source  TEXT NOT NULL DEFAULT '',
    silent_alerted  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY,
    agent_id     TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    observed_at  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    hostname     TEXT NOT NULL,
    user         TEXT NOT NULL,
    payload      BLOB NOT NULL,          -- the protobuf Event as received
    UNIQUE (agent_id, seq)               -- exactly once in the store
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (observed_at);
CREATE INDEX IF NOT EXISTS events_by_kind_time ON events (kind, observed_at);

CREATE TABLE IF NOT EXISTS alerts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id        TEXT NOT NULL,
    hostname        TEXT NOT NULL,
    user            TEXT NOT NULL,
    kind            TEXT NOT NULL,       -- event kind that raised it, or "agent"
    rule            TEXT NOT NULL,
    category        TEXT NOT NULL,
    severity        TEXT NOT NULL,
    summary         TEXT NOT NULL,
    matched         TEXT NOT NULL,       -- what in the event matched the rule
    observed_at     INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    policy_version  TEXT NOT NULL,
    event_seq       INTEGER,
    status          TEXT NOT NULL DEFAULT 'new'
    -- later columns are added by store::migrate, so older files gain them too
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (observed_at);

-- Login sessions as the agents last reported them: what the session rules need to know across
-- events and devices (who is logged on where, what is unlocked and idle).
CREATE TABLE IF NOT EXISTS sessions (
    agent_id           TEXT NOT NULL,
    session_id         TEXT NOT NULL,
    user               TEXT NOT NULL,
    hostname           TEXT NOT NULL,
    grp                TEXT NOT NULL,
    locked             INTEGER NOT NULL DEFAULT 0,
    idle_since         INTEGER,              -- NULL when not idle
    opened_at          INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    unattended_alerted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (agent_id, session_id)
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user);
