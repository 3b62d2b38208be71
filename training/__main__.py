"""`python -m training ...`: see training.cli."""

import sys

from .cli import main

sys.exit(main())
