"""Multi-view image datasets in the NeRF-synthetic ("Blender") layout: reading, checking, writing.

The layout is the one nerfstudio, instant-ngp and most NeRF code read::

    transforms_train.json        {"camera_angle_x": 0.69, "frames": [{"file_path": "./train/r_0",
    transforms_test.json          "transform_matrix": [[...4 numbers...] x 4]}, ...]}
    train/r_0.png ...            RGBA PNGs; alpha is the object's silhouette
    test/r_0.png ...

``transform_matrix`` is camera-to-world in the OpenGL convention (x right, y up, the camera looking
down -z) and ``camera_angle_x`` the horizontal field of view in radians; ``file_path`` is relative to
the JSON, with or without ``.png``. ``transforms_val.json`` stands in for a missing test split, and a
single ``transforms.json`` holding every frame is accepted too: then every 8th frame (0, 8, 16, ...)
is held out, as NeRF code does for its LLFF scenes.

- :func:`read_dataset` reads a folder or a ``.zip`` (members are read from the archive, never
  extracted), checks everything, and places the scene where the methods expect it
  (:func:`normalise_scene`). :class:`DatasetError` says what is wrong, for the person who made it.
- :func:`composite` turns the RGBA frames into the images and silhouettes the methods fit.
- :func:`write_dataset` writes recon's own target views in the same layout.
- :func:`opengl_to_pytorch3d` / :func:`pytorch3d_to_opengl` convert the cameras.

Limits (constants of :mod:`recon.datasets.limits`, all checked before the data they guard is read
or decoded):

- a zip is at most :data:`MAX_ZIP_BYTES` (the page's upload limit), with at most
  :data:`MAX_MEMBERS` members declaring at most :data:`MAX_UNCOMPRESSED_BYTES` in all, none of more
  than :data:`MAX_FILE_BYTES`, and none over 1 MiB compressed more than :data:`MAX_RATIO` times;
- at most :data:`MAX_FRAMES` frames in all: more is refused (not subsampled), saying so;
- images of more than :data:`MAX_IMAGE_PIXELS` pixels are refused from their header, before they
  are decoded; images larger than :data:`LOAD_SIZE` are downscaled to it (area filter) as they
  are read, one at a time, and the dataset's notes say so. Non-square images are centre-cropped
  to a square and their field of view converted, and the notes say so too.

The package, a room per part:

- :mod:`recon.datasets.limits`: the limits above and :class:`DatasetError`;
- :mod:`recon.datasets.cameras`: the camera conventions and :func:`normalise_scene`;
- :mod:`recon.datasets.frames`: :class:`Frames`, :class:`Dataset` and :func:`composite`;
- :mod:`recon.datasets.sources`: reading files from a folder or a zip, and the zip's safety checks;
- :mod:`recon.datasets.reader`: :func:`read_dataset` (the JSON, the matrices, the images);
- :mod:`recon.datasets.writer`: :func:`write_dataset`.
"""

from .cameras import CAMERA_DISTANCE, camera_centres, normalise_scene, opengl_to_pytorch3d, pytorch3d_to_opengl
from .frames import Dataset, Frames, composite
from .limits import (
    LOAD_SIZE,
    MAX_FILE_BYTES,
    MAX_FRAMES,
    MAX_IMAGE_PIXELS,
    MAX_JSON_BYTES,
    MAX_MEMBERS,
    MAX_RATIO,
    MAX_UNCOMPRESSED_BYTES,
    MAX_ZIP_BYTES,
    DatasetError,
)
from .reader import HOLDOUT_EVERY, read_dataset
from .writer import write_dataset

__all__ = [
    "CAMERA_DISTANCE", "HOLDOUT_EVERY", "LOAD_SIZE", "MAX_FILE_BYTES", "MAX_FRAMES", "MAX_IMAGE_PIXELS", "MAX_JSON_BYTES",
    "MAX_MEMBERS", "MAX_RATIO", "MAX_UNCOMPRESSED_BYTES", "MAX_ZIP_BYTES", "Dataset", "DatasetError", "Frames",
    "camera_centres", "composite", "normalise_scene", "opengl_to_pytorch3d", "pytorch3d_to_opengl", "read_dataset",
    "write_dataset",
]
