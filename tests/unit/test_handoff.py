"""The RTMP session handed from worker to worker (agent/handoff.py): it continues exactly
where it stopped, bytes read but not consumed included; anything else is refused."""

import io
import os
import pickle

import pytest

from agent.handoff import MAX_STATE, HandoffError, pack, unpack
from agent.rtmp import ClientSession, ServerSession
from agent.rtmp.events import MediaReceived, PublishRequested, PublishStarted
from agent.rtmp.message import AUDIO, VIDEO, Message


def pending_publish() -> tuple[ClientSession, ServerSession]:
    """A client and a server up to the server's PublishRequested."""
    client = ClientSession("live", "rtmp://127.0.0.1/live", "the-key")
    server = ServerSession()
    client.start()
    for _ in range(20):
        events = server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
        if any(isinstance(e, PublishRequested) for e in events):
            break
    assert server.publish_pending
    return client, server


def test_a_handed_over_session_continues_where_it_stopped():
    client, server = pending_publish()
    # Media sent right after `publish`: one whole message (held until the answer), and
    # half of a second one's chunks (read, not yet a message).
    # (An encoder does not wait for the answer; our client does, so: its chunk writer.)
    sid = client.stream_id
    client._send(Message(VIDEO, sid, 0, b"\x17\x00" + b"v" * 5000))
    client._send(Message(AUDIO, sid, 0, b"\xaf\x01" + b"a" * 300))
    sent = client.data_to_send()
    cut = len(sent) - 200
    assert server.receive_data(sent[:cut]) == []  # held: the publish is pending

    moved = unpack(pack(server))  # ... another process continues from here
    moved.accept_publish()
    events = moved.receive_data(sent[cut:])
    media = [e.message for e in events if isinstance(e, MediaReceived)]
    assert [(m.type_id, bytes(m.payload)[:2], len(m.payload)) for m in media] == [
        (VIDEO, b"\x17\x00", 5002),
        (AUDIO, b"\xaf\x01", 302),
    ]
    # The client sees one server: its answer, then acknowledgements as usual.
    answers = client.receive_data(moved.data_to_send())
    assert any(isinstance(e, PublishStarted) for e in answers)
    assert moved.bytes_received == server.bytes_received + 200
    assert moved.stream_name == "the-key"


def test_only_a_pending_publish_is_handed_over():
    with pytest.raises(HandoffError, match="publish pending"):
        pack(ServerSession())
    _, server = pending_publish()
    server.accept_publish()
    with pytest.raises(HandoffError, match="publish pending"):
        pack(server)
    with pytest.raises(HandoffError, match="publish pending"):
        unpack(pickle.dumps(server))


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "state",
    [
        b"",
        b"not a pickle",
        pickle.dumps({"a": 1}),
        pickle.dumps(Boom()),  # would run a command: the unpickler resolves no such thing
        pickle.dumps(io.BytesIO(b"x")),
        pickle.dumps(pickle.loads),
        pack(pending_publish()[1])[:-5],  # truncated
    ],
)
def test_anything_but_a_session_is_refused(state):
    with pytest.raises(HandoffError):
        unpack(state)


def test_the_state_is_bounded():
    with pytest.raises(HandoffError, match="too large"):
        unpack(b"\x80" * (MAX_STATE + 1))
    _, server = pending_publish()
    server._reader._more += b"x" * (MAX_STATE + 1)  # an impossible session, to test the bound
    with pytest.raises(HandoffError, match="too large"):
        pack(server)
