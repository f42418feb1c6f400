-- Pictures only while someone looks (docs/agent-protocol.md#thumbnail-upload): each
-- GET /streams/{id}/thumbnail marks the stream's picture wanted for a minute; rig's
-- claim and heartbeat answers tell the agent (`thumbnailWanted`), which decodes
-- keyframes for wanted streams only. In PostgreSQL, so any replica serving the GET
-- and any replica answering the agent agree.
CREATE TABLE thumbnail_wanted (
    stream_id    uuid        PRIMARY KEY REFERENCES streams (id) ON DELETE CASCADE,
    wanted_until timestamptz NOT NULL
);
