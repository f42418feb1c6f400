"""RTMP protocol, sans-I/O."""
