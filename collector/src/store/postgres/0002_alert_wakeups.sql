-- Collectors sharing the database wake their consoles' live alert streams when any of them
-- commits alerts (LISTEN invigilator_alerts): one notification per inserting statement,
-- delivered at commit, and folded into one per transaction by the server. What changed is
-- read by the stream's own catch-up query, under its audit entry; the notification carries
-- nothing.
CREATE FUNCTION notify_alerts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('invigilator_alerts', '');
    RETURN NULL;
END $$;
CREATE TRIGGER alerts_notify AFTER INSERT ON alerts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_alerts();

-- The agent's newest event stream, on whichever collector (delivery::open_stream): batches
-- of an older stream, still open on another collector, are refused at commit.
ALTER TABLE agents ADD COLUMN stream_epoch BIGINT NOT NULL DEFAULT 0;
