"""`python -m samplers ...`: the Part A command line (samplers.app.cli)."""

import sys

from samplers.app.cli import main

sys.exit(main())
