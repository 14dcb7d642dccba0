"""``python -m recon``: the headless command line (see :mod:`recon.cli`)."""

import sys

from .cli import main

sys.exit(main())
