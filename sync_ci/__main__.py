"""Allow `python -m sync_ci ...`."""

import sys

from sync_ci.cli import main

sys.exit(main())
