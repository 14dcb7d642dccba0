"""The price of a run before it starts: peak memory and time, from a cost model calibrated by measurement.

- :mod:`recon.cost.model`: the model (the drivers of each method, its phases) and :func:`estimate`.
- :mod:`recon.cost.fitted`: the coefficients calibration measured.
- :mod:`recon.cost.advice`: refusing a run, and what would fit.
- :mod:`recon.cost.measure` and :mod:`recon.cost.calibrate`: how the coefficients are measured
  (``python -m recon.cost --calibrate``).
"""

from .advice import _short as advice_short
from .advice import advice, fits
from .model import EXTRAS, Estimate, estimate, human_bytes, human_seconds, phase_memory

__all__ = ["EXTRAS", "Estimate", "advice", "advice_short", "estimate", "fits", "human_bytes", "human_seconds",
           "phase_memory"]
