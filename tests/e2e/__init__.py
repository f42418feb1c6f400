"""End-to-end tests: rig, rig-agent, ffmpeg and nginx-rtmp as real processes."""
