-- Two Custom destinations may share a key on different servers (a primary and a backup
-- ingest): the server URL is part of what makes a destination unique.
ALTER TABLE destinations DROP CONSTRAINT destinations_unique_target;
CREATE UNIQUE INDEX destinations_unique_target
    ON destinations (stream_id, service, stream_key, coalesce(server_url, ''));
