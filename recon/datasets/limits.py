"""What a dataset may be: the limits it is held to, and the error that says what is wrong with it.

Every limit is checked before the data it guards is read or decoded (:mod:`recon.datasets.sources`
checks a zip's and a file's sizes, :mod:`recon.datasets.reader` the JSON, the frame count and each
image's header). The modules import the constants by name: a test that lowers one patches it in the
module that checks it (e.g. ``recon.datasets.sources.MAX_MEMBERS``).
"""

from __future__ import annotations

#: Largest zip accepted (the page's upload limit for datasets).
MAX_ZIP_BYTES = 64 * 2**20
#: Largest total uncompressed size the members of a zip may declare.
MAX_UNCOMPRESSED_BYTES = 256 * 2**20
#: Most members (files and folders) a zip may hold.
MAX_MEMBERS = 2000
#: Largest single file (image or JSON) read, from a zip or a folder.
MAX_FILE_BYTES = 64 * 2**20
#: Largest transforms JSON (one of MAX_FRAMES frames is a few hundred kB).
MAX_JSON_BYTES = 8 * 2**20
#: Largest compression ratio of any zip member over 1 MiB: PNGs barely compress, zip bombs do.
MAX_RATIO = 100
#: Most frames (training and held-out together); more is refused.
MAX_FRAMES = 300
#: Largest image, in pixels, read from its header before it is decoded; larger ones are refused.
MAX_IMAGE_PIXELS = 4096 * 4096
#: Images larger than this (pixels a side) are downscaled to it as they are read: the methods'
#: largest image size.
LOAD_SIZE = 256


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is meant for the person who supplied it."""


def show_size(n: int) -> str:
    """A byte count as messages show it: '3,072 MB', or '6,000 bytes' under a megabyte."""
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n:,} bytes"


def show_name(name: str, limit: int = 80) -> str:
    """A file name as messages show it: quoted, control characters escaped, at most `limit` characters."""
    return repr(name if len(name) <= limit else name[:limit - 1] + "…")
