"""The test suite (a package, so that tests/agent and tests/bench are not taken for the
agent and bench packages themselves)."""
