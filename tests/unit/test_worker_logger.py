"""A worker's log lines name their logger `agent.worker`, as every other agent module's
do, although the supervisor runs it as `python -m agent.worker` (`__name__` is then
`__main__`)."""

import runpy
import sys


def test_the_worker_logs_as_agent_worker_when_run_as_a_script(monkeypatch):
    # As `python -m` does: the module not imported yet (runpy warns otherwise), run
    # under another name; run_name stands in for "__main__" (which would run main()).
    monkeypatch.delitem(sys.modules, "agent.worker", raising=False)
    module = runpy.run_module("agent.worker", run_name="__as_a_script__")
    assert module["log"].name == "agent.worker"
