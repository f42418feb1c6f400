-- Live sessions (issue 13): one row per broadcast of a stream, from the claim's grant to
-- its end, with the ingest's facts and every destination's figures as last reported by
-- the agent (destinations merged by id, so one removed mid-session stays in the report).
-- Kept after the claim is gone: a streamer reads afterwards whether every destination
-- got the whole broadcast. The rows live in PostgreSQL, so they survive a rig restart.
CREATE TABLE stream_sessions (
    id              uuid             PRIMARY KEY,
    stream_id       uuid             NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    claim_id        uuid             NOT NULL,
    agent_name      text,
    ingest_url      text,
    started_at      timestamptz      NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    end_reason      text,
    -- The last reported ingest facts (codecs, resolution, rates, bytes in).
    ingest          jsonb,
    -- Destination id (as text) -> its figures: bytesSent, liveSeconds, reconnects, ...
    destinations    jsonb            NOT NULL DEFAULT '{}',
    -- Seconds the slate fed the destinations (disconnect protection, issue 15).
    holding_seconds double precision NOT NULL DEFAULT 0
);
CREATE INDEX stream_sessions_stream_idx ON stream_sessions (stream_id, started_at DESC);
CREATE INDEX stream_sessions_claim_idx ON stream_sessions (claim_id);
-- At most one open session per stream.
CREATE UNIQUE INDEX stream_sessions_open_key ON stream_sessions (stream_id)
    WHERE ended_at IS NULL;
