"""``python -m agent`` — the same as the ``rdma-node-agent`` command."""

import sys

from agent.cli import main

sys.exit(main())
