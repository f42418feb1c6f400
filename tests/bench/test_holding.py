"""`bench/run --holding` runs: two streams relayed, their publishers killed, both held.

Real processes (rig, rig-agent, nginx-rtmp, ffmpeg) for about half a minute; no timing
is asserted, only that every stream held to the end of the window (the run fails if
the agent does not report them all holding) and that both phases were measured.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_holding_mode(tmp_path: Path) -> None:
    if shutil.which("ffmpeg") is None or shutil.which("nginx") is None:
        pytest.fail("the benchmark needs ffmpeg and nginx (scripts/test installs them)")
    result_file = tmp_path / "holding.json"
    run = subprocess.run(
        [
            str(REPO / "bench" / "run"), "--holding", "2", "--window", "3", "--warmup", "2",
            "--reps", "1", "--json", str(result_file),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = run.stdout[-6000:] + run.stderr[-4000:]
    assert run.returncode == 0, output
    result = json.loads(result_file.read_text())
    [holding] = result["holding"]
    assert holding["n"] == 2 and holding["d"] == 2
    assert holding["relaying_cpu_s"] > 0 and holding["holding_cpu_s"] > 0, holding
    assert not result["notes"], result["notes"]  # every stream held to the end
