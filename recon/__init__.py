"""recon: a live playground for 3D reconstruction by differentiable rendering.

The package never imports gradio; `app.py` builds the page on top of it.
Importing it does no work and selects no device.
"""

__version__ = "0.1.0"
