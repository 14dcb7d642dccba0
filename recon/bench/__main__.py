"""``python -m recon.bench``: see :mod:`recon.bench.main`."""

import sys

from .main import main

sys.exit(main())
