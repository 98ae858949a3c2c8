-- An agent's quotas as the last collector left them, so that an agent hopping between collectors
-- gets one allowance, not one per collector (delivery::Ration, delivery::Bucket): new streams
-- left and when, rate allowance in bytes and when. NULL: full.
ALTER TABLE agents
    ADD COLUMN stream_allowance DOUBLE PRECISION,
    ADD COLUMN stream_allowance_at BIGINT,
    ADD COLUMN rate_tokens DOUBLE PRECISION,
    ADD COLUMN rate_tokens_at BIGINT;

-- Events by id alone: the primary key (id, observed_at) already serves every look-up and
-- ordering by id, and each index is one more write per event stored.
DROP INDEX IF EXISTS events_by_id;

-- The collectors sharing the database, as each last announced itself (store::peers): an
-- operator sees them all, and each warns when another runs a different configuration.
CREATE TABLE collectors (
    instance       TEXT PRIMARY KEY,
    hostname       TEXT NOT NULL,
    version        TEXT NOT NULL,
    config_digest  TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    seen_at        BIGINT NOT NULL
);
