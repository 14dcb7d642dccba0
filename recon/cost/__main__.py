"""``python -m recon.cost --calibrate``: measure and fit the cost model (see :mod:`recon.cost.calibrate`)."""

import sys

from .calibrate import main

sys.exit(main())
