"""rig-agent: the RTMP ingest that relays each publish to its destinations."""

from agent import fastpath as _fastpath

# The per-message modules compiled (mypyc) when a build of these sources exists.
_fastpath.activate(__path__)
