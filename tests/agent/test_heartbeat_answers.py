"""The agent acts on each heartbeat answer by its status (docs/agent-protocol.md#heartbeat):
`invalid` (rig could not read or renew that entry) changes nothing."""

from types import SimpleNamespace

from agent.destination import EgressSettings
from agent.rig_client import RigClient
from agent.server import IngestServer
from agent.settings import AgentSettings


def test_an_invalid_answer_leaves_the_publish_as_it_is():
    rig = RigClient("http://127.0.0.1:9", "unused")  # never called here
    server = IngestServer(AgentSettings(), rig, EgressSettings())
    applied: list = []
    kicked: list = []
    # Stand-ins for a live ingest: only what apply_heartbeat touches.
    relay = SimpleNamespace(apply_destinations=applied.append)
    ingest = SimpleNamespace(
        claim_id="c1", relay=relay, key_id="k1", kick=lambda: kicked.append(1), broadcast=None
    )
    server.live["key"] = ingest  # type: ignore[assignment]
    server.apply_heartbeat(
        [{"claimId": "c1", "status": "invalid", "reason": "could not be renewed"}]
    )
    assert (applied, kicked) == ([], [])
    server.apply_heartbeat([{"claimId": "c1", "status": "live", "destinations": []}])
    assert applied == [[]]
    server.apply_heartbeat([{"claimId": "c1", "status": "revoked"}])
    assert kicked == [1]
