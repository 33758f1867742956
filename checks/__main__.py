"""Allow `python -m checks ...` (the same options as `sync-ci lint`)."""

import sys

from checks.cli import main

sys.exit(main())
