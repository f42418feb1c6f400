-- API keys for integrations (scripts, bots, stream decks): a secret created once, sent
-- as X-Api-Key or exchanged for a short-lived access token (POST /accounts/token).
-- Only the SHA-256 of the secret is stored: it has 256 random bits, so a fast hash is
-- enough and finds the key with one index lookup. A revoked key is deleted, and with it
-- every token made from it stops working (each use looks the key up).
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    scope        text        NOT NULL CHECK (scope IN ('full', 'read')),
    -- The one stream the key may see and change (NULL: all the user's streams). When
    -- that stream is deleted the key goes too: it must never widen to every stream.
    stream_id    uuid        REFERENCES streams (id) ON DELETE CASCADE,
    key_hash     bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at);
CREATE INDEX api_keys_stream_idx ON api_keys (stream_id);
