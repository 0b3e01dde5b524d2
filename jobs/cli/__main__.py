"""`python -m jobs.cli`: the `edgemine` command."""

import sys

from jobs.cli import main

sys.exit(main())
