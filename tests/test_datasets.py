"""Multi-view image datasets (recon.datasets): the camera conventions, the round trip through the
Blender layout, scene normalisation, compositing, the shipped dataset, and every kind of bad input.

Every entry of tests/fixtures/bad_datasets (made by make_bad_datasets.py) is listed in FIXTURES with
the words its refusal must contain.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image
from pytorch3d.renderer import FoVPerspectiveCameras, look_at_view_transform

import recon.datasets as datasets
import recon.targets as targets
from recon.assets import load_builtin
from recon.datasets import (
    DatasetError,
    Frames,
    camera_centres,
    composite,
    normalise_scene,
    opengl_to_pytorch3d,
    pytorch3d_to_opengl,
    read_dataset,
    write_dataset,
)

FIXTURES = ROOT / "tests" / "fixtures" / "bad_datasets"
COW_VIEWS = ROOT / "assets" / "cow_views"


def opengl_look_at(eye: torch.Tensor, at: torch.Tensor, up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """(N, 4, 4) camera-to-world matrices built the OpenGL way, independently of recon.datasets:
    columns x right, y up, z backward (from the target to the eye), then the eye."""
    z = torch.nn.functional.normalize(eye - at, dim=1)
    x = torch.nn.functional.normalize(torch.linalg.cross(torch.tensor(up).expand_as(z), z), dim=1)
    c2w = torch.eye(4).repeat(len(eye), 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x, torch.linalg.cross(z, x), z, eye
    return c2w


# --- camera conventions -------------------------------------------------------------------------


def test_opengl_cameras_are_pytorch3d_look_at_cameras():
    gen = torch.Generator().manual_seed(0)
    eye = torch.randn(16, 3, generator=gen) * 3
    at = torch.randn(16, 3, generator=gen) * 0.3
    R, T = opengl_to_pytorch3d(opengl_look_at(eye, at))
    R_ref, T_ref = look_at_view_transform(eye=eye, at=at, up=((0.0, 1.0, 0.0),))
    assert torch.allclose(R, R_ref, atol=1e-5) and torch.allclose(T, T_ref, atol=1e-5)
    assert torch.allclose(camera_centres(R, T), eye, atol=1e-5)
    assert torch.allclose(pytorch3d_to_opengl(R, T), opengl_look_at(eye, at), atol=1e-5)


def test_the_camera_s_right_and_up_are_the_image_s_and_the_fov_is_horizontal():
    """A ball to the OpenGL camera's right (+x) and above (+y) renders right of and above the image
    centre; a point at camera_angle_x / 2 to the right lands on the image's right edge."""
    from pytorch3d.renderer import BlendParams, MeshRasterizer, MeshRenderer, RasterizationSettings, SoftSilhouetteShader
    from pytorch3d.utils import ico_sphere

    eye, at = torch.tensor([[2.0, 1.0, 2.5]]), torch.zeros(1, 3)
    c2w = opengl_look_at(eye, at)
    right, up, back = c2w[0, :3, 0], c2w[0, :3, 1], c2w[0, :3, 2]
    R, T = opengl_to_pytorch3d(c2w)
    cams = FoVPerspectiveCameras(R=R, T=T, fov=60.0)
    ball = ico_sphere(1)
    ball = ball.update_padded(ball.verts_padded() * 0.2 + 0.8 * right + 0.6 * up)
    raster = RasterizationSettings(image_size=32, blur_radius=0.0, faces_per_pixel=1)
    sil = MeshRenderer(MeshRasterizer(cameras=cams, raster_settings=raster),
                       SoftSilhouetteShader(blend_params=BlendParams(sigma=1e-4)))(ball)[0, ..., 3]  # (32, 32)
    rows, cols = torch.nonzero(sil > 0.5, as_tuple=True)
    assert len(rows) > 4 and cols.float().mean() > 19 and rows.float().mean() < 13

    depth = float((eye[0] - at[0]).norm())
    edge = eye[0] - depth * back + depth * math.tan(math.radians(30)) * right  # half of 60 degrees to the right
    x, y, _ = cams.transform_points_screen(edge[None, None], image_size=((32, 32),))[0, 0]
    assert x == pytest.approx(32, abs=1e-3) and y == pytest.approx(16, abs=1e-3)


# --- the round trip -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cow():
    return load_builtin("cow")


def _written(views) -> tuple[tuple, tuple]:
    return ((views.images, views.silhouettes, views.R, views.T),
            (views.heldout_images, views.heldout_silhouettes, views.heldout_R, views.heldout_T))


@pytest.mark.parametrize("sweep", ["ring", "mesh"])
def test_round_trip_through_the_blender_layout(cow, sweep, tmp_path):
    """recon's target views, written and read back: the same cameras (1e-5), and re-rendering the
    cow through the cameras read gives the images written. Tolerance: silhouettes everywhere and
    RGB on all but 0.1% of the values within 1/255 (the PNGs' 8-bit rounding is 0.5/255; a
    hard-rasterised pixel whose centre lies on an edge may flip under a 1e-7 camera change)."""
    settings = targets.ViewSettings(num_views=8, image_size=64, sweep=sweep, heldout_views=2, eval_size=64)
    views = targets.views_for(cow, settings)
    train, test = _written(views)
    write_dataset(tmp_path, train, test)
    assert (tmp_path / "train" / "r_000.png").is_file() and (tmp_path / "test" / "r_001.png").is_file()
    assert json.loads((tmp_path / "transforms_train.json").read_text())["frames"][0]["file_path"] == "./train/r_000"

    data = read_dataset(tmp_path)
    assert (len(data.train), len(data.test)) == (8, 2)
    assert any("left as it is" in note for note in data.notes), data.notes
    for frames, (_, _, R, T) in ((data.train, train), (data.test, test)):
        assert (frames.R - R).abs().max() <= 1e-5 and (frames.T - T).abs().max() <= 1e-5
        assert frames.fov_deg == pytest.approx(60.0, abs=1e-9)

    images, sils = targets._render(cow, settings, data.train.R, data.train.T, torch.device("cpu"))
    rgba = data.train.images.float() / 255  # (8, 64, 64, 4)
    tol = 1 / 255 + 1e-6
    assert ((images - rgba[..., :3]).abs() > tol).float().mean() <= 1e-3
    assert (sils - rgba[..., 3]).abs().max() <= tol
    held = data.test.images.float() / 255
    assert (held[..., :3] - views.heldout_images).abs().max() <= tol
    assert (held[..., 3] - views.heldout_silhouettes).abs().max() <= tol


def test_a_zip_with_a_top_level_folder_reads_as_the_folder(cow, tmp_path):
    views = targets.views_for(cow, targets.ViewSettings(num_views=8, image_size=32, sweep="ring", heldout_views=2,
                                                        eval_size=32))
    write_dataset(tmp_path / "cow", *_written(views))
    write_dataset(tmp_path / "flat.zip", *_written(views))
    with zipfile.ZipFile(tmp_path / "nested.zip", "w") as zf:
        for path in sorted((tmp_path / "cow").rglob("*.*")):
            zf.write(path, "cow/" + path.relative_to(tmp_path / "cow").as_posix())
    folder = read_dataset(tmp_path / "cow")
    for name in ("flat.zip", "nested.zip"):
        zipped = read_dataset(tmp_path / name)
        assert zipped.key == folder.key
        assert torch.equal(zipped.train.images, folder.train.images) and torch.equal(zipped.test.T, folder.test.T)
    assert read_dataset(tmp_path / "cow", scale=0.5).key != folder.key  # the overrides are part of the key


# --- placing the scene ----------------------------------------------------------------------------


def _ring_cameras() -> tuple[torch.Tensor, torch.Tensor]:
    """12 cameras 2.7 units around the origin, at three elevations."""
    elev = torch.tensor([0.0, 20.0, -15.0]).repeat(4)
    azim = torch.linspace(0, 330, 12)
    return look_at_view_transform(dist=2.7, elev=elev, azim=azim)


def _moved(R: torch.Tensor, T: torch.Tensor, offset, scale: float) -> torch.Tensor:
    """T of the same cameras in a world moved by X' = scale X + offset (rotations unchanged)."""
    centres = scale * camera_centres(R, T) + torch.tensor(offset)
    return -(centres[:, None] @ R)[:, 0]


def test_cameras_anywhere_are_centred_and_put_at_distance_2_7():
    R, T = _ring_cameras()
    R2, T2, note = normalise_scene(R, _moved(R, T, (5.0, -3.0, 2.0), 10.0))
    assert torch.equal(R2, R)
    assert torch.allclose(T2, T, atol=1e-4)
    assert torch.allclose(camera_centres(R2, T2).norm(dim=1), torch.full((12,), 2.7), atol=1e-4)
    assert "centred on (5, -3, 2), the point nearest to all 12 optical axes" in note, note
    assert "scaled by 0.1 so that the cameras sit 2.7 units from it" in note, note


def test_the_centre_and_scale_can_be_given():
    R, T = _ring_cameras()
    moved = _moved(R, T, (5.0, -3.0, 2.0), 10.0)
    _, T2, note = normalise_scene(R, moved, center=(5.0, -3.0, 2.0), scale=0.05)
    assert torch.allclose(camera_centres(R, T2).norm(dim=1), torch.full((12,), 1.35), atol=1e-4)
    assert "centred on (5, -3, 2), as asked, and scaled by 0.05 as asked" in note, note
    _, T3, _ = normalise_scene(R, moved, center=(5.0, -3.0, 1.0))  # the scale still follows the cameras
    assert camera_centres(R, T3).norm(dim=1).median() == pytest.approx(2.7, abs=1e-4)


def test_cameras_looking_outwards_are_refused():
    R, T = _ring_cameras()
    R_out = R @ torch.diag(torch.tensor([-1.0, 1.0, -1.0]))  # each camera turned round on the spot
    T_out = -(camera_centres(R, T)[:, None] @ R_out)[:, 0]
    with pytest.raises(DatasetError, match="look away from the point nearest.*--center X Y Z --scale S"):
        normalise_scene(R_out, T_out)
    _, T2, _ = normalise_scene(R_out, T_out, center=(0, 0, 0))  # fine once the centre is given
    assert torch.allclose(T2, T_out, atol=1e-5)


# --- images --------------------------------------------------------------------------------------


def test_composite_is_straight_alpha_over_the_background_then_area_averaged():
    rgba = torch.zeros(1, 4, 4, 4, dtype=torch.uint8)
    rgba[0, :2, :, :] = torch.tensor([255, 0, 0, 255], dtype=torch.uint8)  # opaque red top half
    rgba[0, 2:, :2, :] = torch.tensor([0, 255, 0, 51], dtype=torch.uint8)  # green at alpha 0.2
    frames = Frames(images=rgba, R=torch.eye(3)[None], T=torch.zeros(1, 3), fov_deg=60.0)
    images, sils = composite(frames, (0.0, 0.0, 1.0), 4)
    assert torch.allclose(images[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(images[0, 3, 0], torch.tensor([0.0, 0.2, 0.8]))
    assert torch.allclose(images[0, 3, 3], torch.tensor([0.0, 0.0, 1.0]))
    images, sils = composite(frames, (0.0, 0.0, 1.0), 2)  # each output pixel averages 2x2
    assert images.shape == (1, 2, 2, 3) and sils.shape == (1, 2, 2)
    assert torch.allclose(sils[0], torch.tensor([[1.0, 1.0], [0.2, 0.0]]))
    assert torch.allclose(images[0, 1, 0], torch.tensor([0.0, 0.2, 0.8]))


def test_large_wide_images_are_cropped_and_downscaled_and_every_8th_frame_held_out(tmp_path):
    """A single transforms.json of 9 frames of 600x400 pixels: frames 0 and 8 are held out, the
    centre 400x400 square is kept, downscaled to LOAD_SIZE, with its narrower field of view."""
    elev, azim = torch.zeros(9), torch.linspace(0, 320, 9)
    R, T = look_at_view_transform(dist=4.0, elev=elev, azim=azim)
    c2w = pytorch3d_to_opengl(R, T)
    (tmp_path / "images").mkdir()
    yy, xx = np.mgrid[0:400, 0:600]
    alpha = ((xx - 300) ** 2 + (yy - 200) ** 2 < 150**2).astype(np.uint8) * 255
    frames = []
    for i in range(9):
        rgba = np.stack([xx * 255 // 600, yy * 255 // 400, np.full_like(xx, 20 * i), alpha], -1).astype(np.uint8)
        Image.fromarray(rgba, "RGBA").save(tmp_path / "images" / f"{i}.png")
        frames.append({"file_path": f"images/{i}.png", "transform_matrix": c2w[i].tolist()})
    angle_x = math.radians(70)
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": frames}))

    data = read_dataset(tmp_path)
    assert (len(data.train), len(data.test)) == (7, 2)
    assert torch.allclose(data.test.T, T[[0, 8]] * 2.7 / 4.0, atol=1e-5)  # scaled to distance 2.7
    assert data.train.images.shape == (7, datasets.LOAD_SIZE, datasets.LOAD_SIZE, 4)
    expected_fov = math.degrees(2 * math.atan(math.tan(angle_x / 2) * 400 / 600))
    assert data.train.fov_deg == pytest.approx(expected_fov) and data.test.fov_deg == pytest.approx(expected_fov)
    notes = " ".join(data.notes)
    assert "every 8th frame" in notes and "2 of 9" in notes
    assert "centre 400x400 square" in notes and "downscaled to 256x256 (area filter)" in notes
    assert "scaled by 0.675" in notes
    # the disc is centred and 300 of 400 px across: 192 of 256 after the crop and downscale
    sil = data.train.images[0, ..., 3].float() / 255
    assert sil[128, 128] == 1.0 and sil[128, 0] == 0.0
    assert float(sil[128].sum()) == pytest.approx(192, abs=2)


# --- the shipped dataset ---------------------------------------------------------------------------


def test_the_shipped_cow_dataset_reads_back():
    data = read_dataset(COW_VIEWS)
    assert (len(data.train), len(data.test)) == (40, 8)
    assert data.train.images.shape == (40, 128, 128, 4) and data.test.images.shape == (8, 128, 128, 4)
    assert data.train.fov_deg == pytest.approx(60.0) and data.test.fov_deg == pytest.approx(60.0)
    alpha = data.train.images[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255 and ((alpha > 0) & (alpha < 255)).any()  # soft edges
    for frames in (data.train, data.test):
        assert np.allclose(np.linalg.norm(frames.camera_centres(), axis=1), 2.7, atol=1e-4)
    assert any("left as it is" in note for note in data.notes)
    assert sum(p.stat().st_size for p in COW_VIEWS.rglob("*") if p.is_file()) < 2 * 2**20


# --- bad input ------------------------------------------------------------------------------------


#: fixture -> regex the DatasetError message must match
FIXTURES_REFUSED = {
    "not_a_zip.zip": r"'not_a_zip\.zip' is not a zip archive",
    "encrypted.zip": r"the zip is encrypted \(password-protected\)",
    "zip_slip.zip": r"a file named '\.\./evil\.png', which points outside the archive .*zip slip",
    "absolute_path.zip": r"a file named '/tmp/evil\.png', which points outside the archive .*zip slip",
    "zip_bomb.zip": r"'train/padding\.bin', which compresses [\d,]+ times \(the limit is 100\).*zip bomb",
    "zip_bomb_declared.zip": r"declaring 3,072 MB uncompressed; the limit per file is 64 MB.*before extracting",
    "damaged.zip": r"train/r_\d\.png could not be read from the zip: the archive is damaged",
    "no_transforms.zip": r"no transforms_train\.json or transforms\.json found",
    "too_many_frames.zip": r"transforms\.json has 301 frames; the limit is 300\. Refused rather than subsampled",
    "malformed_json": r"transforms_train\.json is not valid JSON \(line 1, column \d+",
    "missing_camera_angle_x": r"transforms_train\.json has no camera_angle_x \(the horizontal field of view",
    "infinite_angle": r"camera_angle_x must be a number of radians between 0 and pi, not inf",
    "no_frames": r"transforms_train\.json has no frames",
    "matrix_not_4x4": r"frame 2: transform_matrix must be 4x4, not 3x4",
    "matrix_not_rigid": r"frame 1: transform_matrix is not a rigid camera-to-world transform",
    "matrix_nan": r"frame 3: transform_matrix holds NaN or infinite values",
    "parallel_cameras": r"optical axes are \(nearly\) parallel.*--center X Y Z --scale S",
    "path_outside": r"frame 0: file_path '\.\./\.\./outside' points outside the dataset",
    "missing_image": r"frame 3: its image 'train/r_3' is not in the dataset",
    "unreadable_image": r"train/r_1\.png could not be read as a PNG image",
    "truncated_image": r"train/r_2\.png could not be read as a PNG image \(damaged or truncated\)",
    "mixed_sizes": r"train/r_3\.png is 16x16 pixels but the first image is 8x8: all images must have the same size",
    "no_alpha": r"train/r_1\.png has no alpha channel: the silhouettes come from alpha; save RGBA PNGs",
    "huge_image": r"train/r_0\.png is 5000x5000 pixels, over the limit of 16,777,216 pixels.*refused rather than decoded",
}


def test_every_fixture_is_covered_and_small():
    assert {p.name for p in FIXTURES.iterdir()} == set(FIXTURES_REFUSED)
    assert sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file()) < 100_000


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """An empty temp dir that tempfile (and so anything recon might extract) uses during the test."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    return tmp


def _refused(path: Path, private_tmp: Path, **kwargs) -> str:
    """read_dataset's message for `path`; checks that nothing was written anywhere near it."""
    before = _tree(path.parent)
    with pytest.raises(DatasetError) as info:
        read_dataset(path, **kwargs)
    assert _tree(path.parent) == before and not any(private_tmp.iterdir())
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 400 and msg.startswith(f"'{path.name}'"), msg
    return msg


@pytest.mark.parametrize("name", sorted(FIXTURES_REFUSED))
def test_bad_dataset_is_refused_with_a_clear_message(name, private_tmp):
    msg = _refused(FIXTURES / name, private_tmp)
    assert re.search(FIXTURES_REFUSED[name], msg), msg


def test_too_many_zip_members_or_bytes_are_refused_before_reading(tmp_path, private_tmp, monkeypatch):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(6):
            zf.writestr(f"train/{i}.bin", np.random.default_rng(i).bytes(1000))
    monkeypatch.setattr("recon.datasets.sources.MAX_MEMBERS", 5)
    assert "the zip holds 6 files; the limit is 5" in _refused(path, private_tmp)
    monkeypatch.setattr("recon.datasets.sources.MAX_MEMBERS", 2000)
    monkeypatch.setattr("recon.datasets.sources.MAX_UNCOMPRESSED_BYTES", 5000)
    assert "declare 6,000 bytes uncompressed; the limit is 5,000 bytes" in _refused(path, private_tmp)


def test_a_zip_over_the_upload_limit_is_refused_unopened(tmp_path, private_tmp, monkeypatch):
    path = tmp_path / "big.zip"
    path.write_bytes(b"x" * 2000)
    monkeypatch.setattr("recon.datasets.sources.MAX_ZIP_BYTES", 1000)
    assert "the zip is 2,000 bytes, over the 1,000 bytes limit" in _refused(path, private_tmp)


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path, private_tmp):
    (tmp_path / "secret.png").write_bytes((FIXTURES / "no_alpha" / "train" / "r_0.png").read_bytes())
    data = tmp_path / "linked"
    (data / "train").mkdir(parents=True)
    (data / "transforms_train.json").write_bytes((FIXTURES / "no_alpha" / "transforms_train.json").read_bytes())
    for i in range(4):
        (data / "train" / f"r_{i}.png").symlink_to(tmp_path / "secret.png")
    assert "train/r_0.png points outside the dataset folder" in _refused(data, private_tmp)


def test_bad_overrides_are_refused(private_tmp):
    assert "the scale must be a positive number, not -1" in _refused(COW_VIEWS, private_tmp, scale=-1.0)
    assert "the centre must be three finite numbers" in _refused(COW_VIEWS, private_tmp, center=(0.0, math.nan, 0.0))
