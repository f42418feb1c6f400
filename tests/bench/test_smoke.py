"""The benchmark's smoke variant runs and our relay loses no media after the head.

It drives real processes (rig, rig-agent, nginx-rtmp, ffmpeg) for about half a minute and
asserts no timing: only that `bench/run --smoke --watch` succeeds, reports zero mid-stream
and tail loss at every destination of our relay, and that the pictures asked for (as an
open dashboard does) came.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_smoke(tmp_path: Path) -> None:
    if shutil.which("ffmpeg") is None or shutil.which("nginx") is None:
        pytest.fail("the benchmark needs ffmpeg and nginx (scripts/test installs them)")
    result_file = tmp_path / "smoke.json"
    run = subprocess.run(
        [str(REPO / "bench" / "run"), "--smoke", "--watch", "--json", str(result_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = run.stdout[-6000:] + run.stderr[-4000:]
    assert run.returncode == 0, output
    result = json.loads(result_file.read_text())
    ours = [w for w in result["workload"] if w["relay"] == "ours"]
    assert ours, output
    for workload in ours:
        assert not workload["publisher_errors"], workload["publisher_errors"]
        assert workload["watched"] and workload["pictures_seen"] >= workload["n"], workload
        assert len(workload["destinations"]) == workload["n"] * workload["d"]
        for dest in workload["destinations"]:
            assert dest["recordings"], f"nothing recorded: {dest}"
            for track in ("video", "audio"):
                loss = dest[track]
                assert loss["received"] > 0, dest
                assert loss["mid_ms"] == 0 and loss["mid_tags"] == 0, dest
                assert loss["tail_ms"] == 0, dest
                assert loss["foreign"] == 0 and loss["out_of_order"] == 0, dest
