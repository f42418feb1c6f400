"""`python -m bench.thumbnails` measures what it says: a picture per case, made from the
relay's newest keyframe of a live-like encoding (no timing asserted)."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_case_is_measured():
    run = subprocess.run(
        [sys.executable, "-m", "bench.thumbnails", "--reps", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    pattern = re.compile(
        r"^thumbnail (\w+ \d+x\d+ [\d.]+ Mbit/s) +keyframe +([\d.]+) KB -> JPEG +([\d.]+) KB:"
        r" CPU +([\d.]+) ms median, +([\d.]+) max"
    )
    rows = [m.groups() for line in run.stdout.splitlines() if (m := pattern.match(line))]
    assert [row[0] for row in rows] == [
        "h264 1280x720 4.5 Mbit/s",
        "h264 1920x1080 6 Mbit/s",
        "hevc 1280x720 3 Mbit/s",
        "hevc 1920x1080 4.5 Mbit/s",
    ], run.stdout
    for _case, keyframe_kb, jpeg_kb, cpu_median, cpu_max in rows:
        assert float(keyframe_kb) > 30  # a keyframe at a live bitrate, not a trivial one
        assert 0 < float(jpeg_kb) < 32
        assert 0 < float(cpu_median) <= float(cpu_max)
