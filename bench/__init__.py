"""Benchmark of rig's relay against nginx-rtmp `push`: `bench/run` or `python -m bench`."""
