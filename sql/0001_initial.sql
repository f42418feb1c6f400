-- Users, streams, destinations and agent credentials.
-- Every lookup the API makes has an index: users by lower(username) (login),
-- streams by owner (list) and by stream_key (the agents' hot path),
-- destinations by stream, agents by the hash of their API key.

CREATE TABLE users (
    id               uuid        PRIMARY KEY,
    username         text        NOT NULL CHECK (char_length(username) BETWEEN 3 AND 64),
    email            text        NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    password_hash    text        NOT NULL,
    -- Bumped on password change; tokens carry the generation they were issued for.
    token_generation integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE streams (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stream_key text        NOT NULL,
    is_active  boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT streams_stream_key_key UNIQUE (stream_key)
);
CREATE INDEX streams_user_id_idx ON streams (user_id, created_at);

CREATE TABLE destinations (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id  uuid        NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    service    text        NOT NULL,
    stream_key text        NOT NULL CHECK (char_length(stream_key) BETWEEN 1 AND 512),
    is_active  boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT destinations_unique_target UNIQUE (stream_id, service, stream_key)
);

CREATE TABLE agents (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    -- SHA-256 of the API key: the key has 256 random bits, so a fast hash is enough
    -- and lets us find the agent by its key with one index lookup.
    key_hash   bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CONSTRAINT agents_key_hash_key UNIQUE (key_hash)
);
CREATE UNIQUE INDEX agents_name_key ON agents (name) WHERE revoked_at IS NULL;
