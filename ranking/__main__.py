"""`python -m ranking fit FILE ...` and `python -m ranking elo FILE ...`; see ranking/cli.py."""

import sys

from ranking.cli import main

sys.exit(main())
