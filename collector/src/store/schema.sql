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

-- Failed enrolments per source address (store::enrol_guard).
CREATE TABLE IF NOT EXISTS enrol_failures (
    addr          TEXT PRIMARY KEY,
    window_start  INTEGER NOT NULL,
    failures      INTEGER NOT NULL,
    refused       INTEGER NOT NULL
) WITHOUT ROWID;

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
    -- later columns are added by store::migrate, so older files gain them too
);

-- What each agent added to the store per UTC day: the daily quota is counted here, not in one
-- collector's memory, so it holds when several collectors share the database.
CREATE TABLE IF NOT EXISTS agent_usage (
    agent_id  TEXT NOT NULL,
    day       INTEGER NOT NULL,         -- days since the Unix epoch, UTC
    bytes     INTEGER NOT NULL,
    events    INTEGER NOT NULL,
    PRIMARY KEY (agent_id, day)
) WITHOUT ROWID;

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
-- Who is logged on at a device, most recently active first (store::sessions::logged_on).
CREATE INDEX IF NOT EXISTS sessions_by_activity ON sessions (agent_id, locked, updated_at DESC);

-- ---------------------------------------------------------------------------------------------
-- Staff console (issue 5)

-- Staff accounts. Passwords are argon2id PHC strings; the TOTP secret is base32 and optional.
CREATE TABLE IF NOT EXISTS staff (
    username             TEXT PRIMARY KEY,
    display_name         TEXT NOT NULL DEFAULT '',
    email                TEXT NOT NULL DEFAULT '',
    role                 TEXT NOT NULL,      -- technician | dsl | leadership | governor
    is_admin             INTEGER NOT NULL DEFAULT 0,  -- may manage accounts
    password_hash        TEXT NOT NULL,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    totp_secret          TEXT,
    totp_last_step       INTEGER,            -- a one-time code is accepted once
    failed_logins        INTEGER NOT NULL DEFAULT 0,
    locked_until         INTEGER,
    disabled             INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL
);

-- Single sign-ons under way (accounts::sso): the SHA-256 of the state and of the browser's
-- cookie; deleted when used, forgotten after ten minutes.
CREATE TABLE IF NOT EXISTS sso_logins (
    state         TEXT PRIMARY KEY,
    browser       TEXT NOT NULL,
    source        TEXT NOT NULL,     -- the address that began it (a cap per address)
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    next          TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;

-- Console log-ins. Only the SHA-256 of the cookie's token is stored.
-- Log-in back-off (accounts::throttle): failures per typed name (a digest) and address, per
-- name and per address; attempts before until_at are refused unchecked.
CREATE TABLE IF NOT EXISTS login_throttle (
    name      TEXT NOT NULL,            -- sha256 prefix of the typed name; '' for the address key
    addr      TEXT NOT NULL,            -- source address; '' for the name key
    failures  INTEGER NOT NULL,
    first_at  INTEGER NOT NULL,
    last_at   INTEGER NOT NULL,
    until_at  INTEGER NOT NULL,
    refused   INTEGER NOT NULL,         -- always 0: refusals are counted in memory (throttle::Refusals)
    PRIMARY KEY (name, addr)
) WITHOUT ROWID;

-- Notices every DSL and leadership account sees on each console page (approvers::sync).
CREATE TABLE IF NOT EXISTS notices (
    id    INTEGER PRIMARY KEY,
    at    INTEGER NOT NULL,
    text  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS console_sessions (
    token_hash  BLOB PRIMARY KEY,
    username    TEXT NOT NULL,
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    source      TEXT NOT NULL
);

-- Every read and change of monitored data. Each entry's hash covers the previous entry's hash
-- and its own fields (see audit::chain), so an edit, deletion or reordering breaks the chain.
CREATE TABLE IF NOT EXISTS audit_log (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    role      TEXT NOT NULL,
    action    TEXT NOT NULL,
    object    TEXT NOT NULL,
    purpose   TEXT NOT NULL DEFAULT '',
    source    TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT '',
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
-- The application never edits the trail; these stop an accident, the chain catches the rest.
CREATE TRIGGER IF NOT EXISTS audit_log_append_only_u BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_append_only_d BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Alert workflow: each status change, assignment or note, in order.
CREATE TABLE IF NOT EXISTS alert_notes (
    id          INTEGER PRIMARY KEY,
    alert_id    INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    author      TEXT NOT NULL,
    status_from TEXT NOT NULL,
    status_to   TEXT NOT NULL,
    assigned_to TEXT,
    note        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alert_notes_by_alert ON alert_notes (alert_id, id);

-- The Online Safety incident log. An incident's fields live in versions: an edit appends one.
CREATE TABLE IF NOT EXISTS incidents (
    id          INTEGER PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incident_versions (
    incident_id INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    author      TEXT NOT NULL,
    record      TEXT NOT NULL,        -- JSON: the incident's fields as of this version
    PRIMARY KEY (incident_id, version)
);
CREATE TABLE IF NOT EXISTS incident_alerts (
    incident_id INTEGER NOT NULL,
    alert_id    INTEGER NOT NULL,
    PRIMARY KEY (incident_id, alert_id)
);
CREATE TRIGGER IF NOT EXISTS incident_versions_append_only BEFORE UPDATE ON incident_versions
BEGIN SELECT RAISE(ABORT, 'incident history is append-only'); END;
-- Retention (retention.rs) deletes whole incidents past their period: it writes the cutoff to
-- meta in the same transaction; nothing newer can be deleted, and nothing at all before a run.
CREATE TRIGGER IF NOT EXISTS incident_versions_retention_only BEFORE DELETE ON incident_versions WHEN OLD.at >= coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'retention_incidents_before'), -9223372036854775808) BEGIN SELECT RAISE(ABORT, 'incident history is kept until its retention period ends'); END;
-- Retention keeps an alert an incident still holds: looked up by alert.
CREATE INDEX IF NOT EXISTS incident_alerts_by_alert ON incident_alerts (alert_id);

-- Two-person rule: revealing a pupil's full addresses or searches for one alert.
CREATE TABLE IF NOT EXISTS reveal_requests (
    id           INTEGER PRIMARY KEY,
    alert_id     INTEGER NOT NULL,
    requested_by TEXT NOT NULL,
    reason       TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    decided_by   TEXT,
    decided_at   INTEGER,
    decision     TEXT,                -- approved | refused
    expires_at   INTEGER
);
CREATE INDEX IF NOT EXISTS reveal_requests_by_alert ON reveal_requests (alert_id, requested_by);

-- Checks requested by leadership and run by a technician.
CREATE TABLE IF NOT EXISTS checks (
    id           INTEGER PRIMARY KEY,
    requested_by TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    scope        TEXT NOT NULL,       -- JSON: users, groups, devices, from, to, kinds, categories
    status       TEXT NOT NULL DEFAULT 'requested',   -- requested | run
    run_by       TEXT,
    run_at       INTEGER,
    result       TEXT                 -- JSON rows
);

-- Generated reports (the weekly report), kept as they were generated.
CREATE TABLE IF NOT EXISTS reports (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    generated_at INTEGER NOT NULL,
    generated_by TEXT NOT NULL,
    body         TEXT NOT NULL
);

-- Console filters on the alerts list.
CREATE INDEX IF NOT EXISTS alerts_by_severity ON alerts (severity, id);
CREATE INDEX IF NOT EXISTS alerts_by_category ON alerts (category, id);
CREATE INDEX IF NOT EXISTS alerts_by_user ON alerts (user, id);
CREATE INDEX IF NOT EXISTS alerts_by_host ON alerts (hostname, id);
CREATE INDEX IF NOT EXISTS alerts_by_status ON alerts (status, id);
-- No new index on events: ingest pays for every one. The detail view finds an alert's
-- neighbours through (agent_id, seq); checks and exports scan by time.

-- One row per reported browsing visit, so the reports of one visit are counted once: the
-- browser extension's and the history database's (both report a visit the extension saw), and
-- an extension resend after a lost acknowledgement. Deleted with its event.
CREATE TABLE IF NOT EXISTS visit_reports (
    event_id    INTEGER PRIMARY KEY REFERENCES events(id) ON DELETE CASCADE,
    agent_id    TEXT NOT NULL,
    user        TEXT NOT NULL,
    url_hash    BLOB NOT NULL,           -- SHA-256 of the URL as stored (redacted ones too)
    visit_time  INTEGER NOT NULL,        -- the browser's time for the visit, microseconds
    reporter    TEXT NOT NULL,           -- 'history' or 'extension'
    -- The first report's event_id; NULL on the first, and once retention has deleted the first
    -- (a copy may outlive it), so a later copy never points at nothing.
    same_as     INTEGER REFERENCES events(id) ON DELETE SET NULL,
    rules       TEXT NOT NULL DEFAULT '' -- on the first report: every alert rule the visit raised
);
CREATE INDEX IF NOT EXISTS visit_reports_by_url ON visit_reports (agent_id, url_hash, visit_time);
-- Not partial: deleting an event looks its copies up through it.
CREATE INDEX IF NOT EXISTS visit_reports_by_first ON visit_reports (same_as);

-- The collectors sharing the database, as each last announced itself (store::peers).
CREATE TABLE IF NOT EXISTS collectors (
    instance       TEXT PRIMARY KEY,
    hostname       TEXT NOT NULL,
    version        TEXT NOT NULL,
    config_digest  TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    seen_at        INTEGER NOT NULL
);
