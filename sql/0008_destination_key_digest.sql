-- A destination key must never reach PostgreSQL's log. A unique violation prints the
-- conflicting key in its DETAIL line, so the duplicate check compares a digest of the
-- key instead (rig also checks before writing, so the index only catches a race, and
-- then the DETAIL shows the digest).
-- convert_to() is STABLE in general (an encoding conversion); with the fixed name
-- 'UTF8' from a UTF-8 database it is a pure function, so this wrapper may be IMMUTABLE.
CREATE FUNCTION destination_key_digest(key text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT sha256(convert_to(key, 'UTF8')) $$;

DROP INDEX destinations_unique_target;
CREATE UNIQUE INDEX destinations_unique_target
    ON destinations (stream_id, service, destination_key_digest(stream_key),
                     coalesce(server_url, ''));
