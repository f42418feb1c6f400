-- Live updates for the dashboard (GET /streams/{streamID}/events, rig/events.py).
-- rig is stateless and may run as several replicas, so changes are announced by
-- PostgreSQL itself: every change to a stream, its destinations or its live claim (each
-- heartbeat renews the claim with new health) notifies channel `rig_stream_changed`
-- with the stream's id. A notification is delivered when its transaction commits, so a
-- listener that reads on it sees the change. Nobody listening costs only the NOTIFY.
CREATE FUNCTION rig_notify_stream_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD;
    ELSE
        changed := NEW;
    END IF;
    IF TG_TABLE_NAME = 'streams' THEN
        PERFORM pg_notify('rig_stream_changed', changed.id::text);
    ELSE
        PERFORM pg_notify('rig_stream_changed', changed.stream_id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER streams_notify_changed
    AFTER UPDATE OR DELETE ON streams
    FOR EACH ROW EXECUTE FUNCTION rig_notify_stream_changed();
CREATE TRIGGER destinations_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON destinations
    FOR EACH ROW EXECUTE FUNCTION rig_notify_stream_changed();
CREATE TRIGGER stream_claims_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON stream_claims
    FOR EACH ROW EXECUTE FUNCTION rig_notify_stream_changed();
