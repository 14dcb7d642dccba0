"""Built-in targets load and are normalised; basic bad uploads are refused with a message."""

from __future__ import annotations

import pytest
import torch

from recon.assets import BUILTINS, MAX_FACES, AssetError, load_builtin
from recon.uploads import load_upload


@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_loads_and_is_normalised(name):
    a = load_builtin(name)
    assert a.verts.ndim == 2 and a.verts.shape[1] == 3 and a.faces.shape[1] == 3
    assert a.faces.min() >= 0 and a.faces.max() < a.verts.shape[0]
    assert torch.allclose(a.verts.mean(0), torch.zeros(3), atol=1e-5)  # centred
    assert a.verts.abs().max().item() == pytest.approx(1.0, abs=1e-6)  # scaled as the tutorials do
    assert a.vert_colors.shape == a.verts.shape and 0 <= a.vert_colors.min() and a.vert_colors.max() <= 1
    mesh = a.meshes("cpu")
    assert mesh.verts_packed().shape == a.verts.shape


def test_cow_has_its_texture():
    cow = load_builtin("cow")
    assert cow.texture is not None and cow.texture.image.shape[-1] == 3
    assert cow.texture.faces_uvs.shape == cow.faces.shape


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


TRI = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"


def test_good_obj_upload_is_normalised(tmp_path):
    a = load_upload(_write(tmp_path, "tet.obj", TRI), "my tet.obj")
    assert a.name == "my_tet" and a.num_faces == 4 and a.key.startswith("upload:")
    assert a.verts.abs().max().item() == pytest.approx(1.0)


@pytest.mark.parametrize("name,text,expect", [
    ("mesh.txt", TRI, "unsupported file type"),
    ("empty.obj", "", "empty"),
    ("points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    ("nan.obj", TRI.replace("v 1 0 0", "v nan 0 0"), "NaN or infinite"),
    ("range.obj", TRI + "f 1 2 99\n", "face indices outside"),
    ("junk.obj", "hello, I am not a mesh\n", "no vertices|could not be read"),
])
def test_bad_uploads_are_refused_with_a_message(tmp_path, name, text, expect):
    with pytest.raises(AssetError, match=expect):
        load_upload(_write(tmp_path, name, text), name)


def test_too_many_faces_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("recon.uploads.HARD_MAX_FACES", 3)  # above MAX_FACES a mesh is simplified, above this refused
    with pytest.raises(AssetError, match="declares 4 faces; the limit is 3"):
        load_upload(_write(tmp_path, "tet.obj", TRI), "tet.obj")
    assert MAX_FACES > 3
