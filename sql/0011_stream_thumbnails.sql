-- The latest picture of each live stream (issue 13,
-- docs/agent-protocol.md#thumbnail-upload): a small JPEG its agent decoded from the
-- ingest, with the claim it belongs to and when it was taken.
-- In PostgreSQL, as everything rig knows: any replica serves it.
CREATE TABLE stream_thumbnails (
    stream_id uuid        PRIMARY KEY REFERENCES streams (id) ON DELETE CASCADE,
    claim_id  uuid        NOT NULL,
    image     bytea       NOT NULL CHECK (octet_length(image) <= 262144),
    width     integer     NOT NULL,
    height    integer     NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT now()
);
