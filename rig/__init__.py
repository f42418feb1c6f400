"""rig: the control plane of the rig RTMP multistreaming relay."""

__version__ = "0.1.0"
