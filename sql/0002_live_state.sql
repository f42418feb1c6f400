-- Live state shared by agents through rig: claims, destination extensions, webhooks.

-- One live claim per stream at most: the primary key makes "one stream key is live on
-- at most one agent" a database fact, granted atomically by INSERT ... ON CONFLICT.
CREATE TABLE stream_claims (
    stream_id  uuid        PRIMARY KEY REFERENCES streams (id) ON DELETE CASCADE,
    claim_id   uuid        NOT NULL UNIQUE,
    agent_id   uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    ingest_url text        NOT NULL,
    since      timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- The last heartbeat's statistics: ingest and per-destination state.
    health     jsonb
);
CREATE INDEX stream_claims_agent_idx ON stream_claims (agent_id);
CREATE INDEX stream_claims_expiry_idx ON stream_claims (expires_at);

-- Custom destinations carry their own server URL; built-in services use rig's settings.
ALTER TABLE destinations ADD COLUMN server_url text
    CHECK (server_url IS NULL OR char_length(server_url) <= 512);

-- Webhooks: where to POST a stream's events, and the key that signs them.
ALTER TABLE streams ADD COLUMN callback_url text
    CHECK (callback_url IS NULL OR char_length(callback_url) <= 2048);
ALTER TABLE streams ADD COLUMN webhook_secret text;

-- The outbox: an event is written in the same transaction as the change it reports,
-- then delivered (at least once) by any rig process, retried with backoff.
CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       uuid        NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    event           text        NOT NULL,
    body            text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
