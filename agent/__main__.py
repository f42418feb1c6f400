"""`python -m agent` is the `rig-agent` command."""

import sys

from agent.cli import main

sys.exit(main())
