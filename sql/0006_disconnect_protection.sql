-- Disconnect protection and backup ingest (issue 15).

-- Per stream: how long an agent holds the destinations (with a slate) after the publisher's
-- connection drops without an unpublish, and the optional second ingest key.
ALTER TABLE streams ADD COLUMN protection_enabled boolean NOT NULL DEFAULT true;
ALTER TABLE streams ADD COLUMN grace_seconds integer NOT NULL DEFAULT 30
    CHECK (grace_seconds BETWEEN 0 AND 600);
ALTER TABLE streams ADD COLUMN backup_stream_key text;

-- Every ingest key, primary and backup, in one namespace: the primary key makes a key
-- unique across both kinds and all streams (a backup key equal to another stream's
-- primary key would make a publish ambiguous), and it is the index an agent's claim
-- looks a key up by. The streams columns stay the truth; a trigger keeps this in step.
CREATE TABLE ingest_keys (
    key       text PRIMARY KEY,
    stream_id uuid NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    role      text NOT NULL CHECK (role IN ('primary', 'backup')),
    UNIQUE (stream_id, role)
);

CREATE FUNCTION rig_sync_ingest_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ingest_keys WHERE stream_id = NEW.id;
    INSERT INTO ingest_keys (key, stream_id, role) VALUES (NEW.stream_key, NEW.id, 'primary');
    IF NEW.backup_stream_key IS NOT NULL THEN
        INSERT INTO ingest_keys (key, stream_id, role)
            VALUES (NEW.backup_stream_key, NEW.id, 'backup');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER streams_sync_ingest_keys
    AFTER INSERT OR UPDATE OF stream_key, backup_stream_key ON streams
    FOR EACH ROW EXECUTE FUNCTION rig_sync_ingest_keys();

INSERT INTO ingest_keys (key, stream_id, role) SELECT stream_key, id, 'primary' FROM streams;

-- What feeds a live stream's destinations, as its agent last reported (heartbeat
-- health.ingestState): the primary, the backup, or the slate while holding. state_since
-- is when it last changed; holding_seconds sums the holding periods that have ended.
ALTER TABLE stream_claims ADD COLUMN ingest_state text NOT NULL DEFAULT 'live'
    CHECK (ingest_state IN ('live', 'backup', 'holding'));
ALTER TABLE stream_claims ADD COLUMN state_since timestamptz NOT NULL DEFAULT now();
ALTER TABLE stream_claims ADD COLUMN holding_seconds double precision NOT NULL DEFAULT 0;
