"""Hostile and broken input: uploads, knob values from API clients, diverging runs and out-of-memory.

Every file in tests/fixtures/bad_meshes is listed in FIXTURES with the message it must produce (or
the note it is accepted with); oversize files are generated at test time instead of being stored.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

import app
from recon.assets import MAX_FACES, MAX_UPLOAD_BYTES, AssetError, load_upload
from recon.methods.deform import Deform, DeformConfig
from recon.params import from_values, knobs
from recon.runner import Run

FIXTURES = ROOT / "tests" / "fixtures" / "bad_meshes"
pytestmark = pytest.mark.filterwarnings("ignore:Faces have invalid indices:UserWarning")  # pytorch3d, then refused


@pytest.fixture(autouse=True)
def cheap_metric(monkeypatch):
    """The held-out metric on 300 points instead of 10,000: same code path, a fraction of the time."""
    from api_inputs import cheap_evaluate

    monkeypatch.setattr(Deform, "evaluate", cheap_evaluate)

#: fixture file -> regex its AssetError message must match (None: accepted)
FIXTURES_REFUSED = {
    "not_a_mesh.obj": r"'not_a_mesh\.obj' holds no mesh: no vertices or faces .* really a \.obj file",
    "not_a_mesh.stl": r"'not_a_mesh\.stl' holds no mesh",
    "png_renamed.obj": r"'png_renamed\.obj' is not a mesh: it looks like a PNG image",
    "pickle_renamed.ply": r"'pickle_renamed\.ply' is not a mesh: it looks like a Python pickle \(never loaded",
    "web_page.glb": r"'web_page\.glb' is not a mesh: it looks like a web page",
    "empty.obj": r"'empty\.obj' is empty \(0 bytes\)",
    "empty_mesh.obj": r"'empty_mesh\.obj' holds no mesh",
    "no_faces.obj": r"'no_faces\.obj' has no faces \(is it a point cloud\?\)",
    "nan_coords.obj": r"'nan_coords\.obj' has NaN or infinite vertex coordinates",
    "inf_coords.ply": r"'inf_coords\.ply' has NaN or infinite vertex coordinates",
    "bad_indices.obj": r"'bad_indices\.obj' has face indices outside the vertex range 0\.\.2",
    "bad_indices.off": r"'bad_indices\.off' has face indices outside the vertex range 0\.\.2",
    "degenerate.obj": r"'degenerate\.obj' is degenerate: all its faces have zero area",
    "collapsed.obj": r"'collapsed\.obj' is degenerate: all its faces collapse to a point",
    "truncated.glb": r"'truncated\.glb' could not be read as a \.glb mesh",
    "truncated.ply": r"'truncated\.ply' could not be read as a \.ply mesh",
}
#: accepted fixtures -> regex one of the asset's notes must match (None: no note expected)
FIXTURES_ACCEPTED = {
    "nonmanifold.obj": r"1 edge is shared by more than two faces \(non-manifold\)\. The mesh is used as it is",
    "stray_vertex.obj": r"1 vertex that no face uses was dropped",
    "huge_coords.obj": None,
}


def test_every_fixture_is_covered():
    on_disk = {p.name for p in FIXTURES.iterdir()}
    assert on_disk == set(FIXTURES_REFUSED) | set(FIXTURES_ACCEPTED)
    assert all(p.stat().st_size < 4096 for p in FIXTURES.iterdir())  # commit-friendly


@pytest.mark.parametrize("name", sorted(FIXTURES_REFUSED))
def test_bad_fixture_is_refused_with_a_clear_message(name):
    with pytest.raises(AssetError) as info:
        load_upload(FIXTURES / name, name)
    msg = str(info.value)
    assert re.search(FIXTURES_REFUSED[name], msg), msg
    assert "\n" not in msg and len(msg) < 400 and "Traceback" not in msg


@pytest.mark.parametrize("name", sorted(FIXTURES_ACCEPTED))
def test_odd_but_usable_fixture_is_accepted(name):
    asset = load_upload(FIXTURES / name, name)
    assert torch.isfinite(asset.verts).all()
    assert asset.verts.abs().max().item() == pytest.approx(1.0, abs=1e-5)  # normalised despite stray/huge values
    assert asset.faces.min() >= 0 and asset.faces.max() < asset.verts.shape[0]
    want = FIXTURES_ACCEPTED[name]
    assert (want is None and not asset.notes) or any(re.search(want, n) for n in asset.notes), asset.notes


def _binary_ply(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(verts)}\nproperty float x\n"
            f"property float y\nproperty float z\nelement face {len(faces)}\n"
            "property list uchar int vertex_indices\nend_header\n").encode()
    rows = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    rows["n"], rows["i"] = 3, faces
    path.write_bytes(head + verts.astype("<f4").tobytes() + rows.tobytes())


def test_huge_mesh_is_refused_with_how_to_simplify(tmp_path):
    n = MAX_FACES + 1
    verts = np.random.default_rng(0).random((n + 2, 3))
    faces = np.stack([np.arange(n), np.arange(n) + 1, np.arange(n) + 2], 1)
    path = tmp_path / "huge.ply"
    _binary_ply(path, verts, faces)
    assert path.stat().st_size < MAX_UPLOAD_BYTES  # refused for its faces, not its bytes
    with pytest.raises(AssetError, match=rf"{n:,} faces; the limit is {MAX_FACES:,}\. Simplify it first "
                                         r"\(e\.g\. Blender's Decimate .*MeshLab"):
        load_upload(path, "huge.ply")


def test_too_large_file_is_refused_before_parsing(tmp_path, monkeypatch):
    import recon.assets as assets

    def never(*_a, **_k):
        raise AssertionError("an oversize upload was parsed")

    monkeypatch.setattr(assets, "_read_mesh", never)
    path = tmp_path / "big.obj"
    with open(path, "wb") as fh:  # sparse: no 20 MB written to disk
        fh.truncate(MAX_UPLOAD_BYTES + 1)
    with pytest.raises(AssetError, match=rf"over the {MAX_UPLOAD_BYTES // 2**20} MB upload limit"):
        load_upload(path, "big.obj")


@pytest.mark.parametrize("filename, shown, stem", [
    ("tëapot ü.obj", "tëapot ü.obj", "teapot_u"),
    ("模型.obj", "模型.obj", "upload"),
    ("my mesh (final) v2.OBJ", "my mesh (final) v2.OBJ", "my_mesh_final_v2"),
    ("../../etc/passwd.obj", "passwd.obj", "passwd"),
    ("C:\\Users\\me\\Desktop\\cow.obj", "cow.obj", "cow"),
    ("bad\nname\t\x00.obj", "bad name .obj", "bad_name"),
    ("x" * 300 + ".obj", "x" * 55 + "….obj", "x" * 48),
])
def test_odd_file_names(filename, shown, stem):
    asset = load_upload(FIXTURES / "nonmanifold.obj", filename)
    assert asset.name == stem
    with pytest.raises(AssetError) as info:  # and messages quote a tidy, bounded name
        load_upload(FIXTURES / "nan_coords.obj", filename)
    assert str(info.value).startswith(f"'{shown}' has NaN")


@pytest.mark.parametrize("filename, msg", [
    ("mesh.obj.exe", r"'mesh\.obj\.exe': unsupported file type '\.exe'"),
    ("no_extension", r"unsupported file type '\(none\)'"),
    ("mesh.pkl", r"unsupported file type '\.pkl'"),
    ("weights.pt", r"unsupported file type '\.pt'"),
])
def test_unsupported_names_are_refused(filename, msg):
    with pytest.raises(AssetError, match=msg + r"\. Upload one of \.obj, \.ply, \.off, \.stl, \.glb"):
        load_upload(FIXTURES / "nonmanifold.obj", filename)


# --- the page's upload endpoint ---------------------------------------------------------------


@pytest.fixture(scope="module")
def served():
    from conftest import launch
    from gradio_client import Client

    app._import_pytorch3d()
    demo, url = launch(max_runs=2)
    yield demo, Client(url, verbose=False), url
    demo.close()


def test_page_upload_messages_and_server_survives(served, tmp_path):
    import urllib.request

    from gradio_client import handle_file

    demo, client, url = served
    cases = {
        "png_renamed.obj": r"⚠️ 'png_renamed\.obj' is not a mesh: it looks like a PNG image",
        "nan_coords.obj": r"⚠️ 'nan_coords\.obj' has NaN or infinite vertex coordinates",
        "empty.obj": r"⚠️ 'empty\.obj' is empty",
        "bad_indices.off": r"⚠️ 'bad_indices\.off' has face indices outside",
        "nonmanifold.obj": r"^Uploaded \*\*nonmanifold\*\*: 5 vertices, 3 faces.*Note: 1 edge is shared",
    }
    for name, want in cases.items():
        target, _, msg = client.predict(handle_file(str(FIXTURES / name)), api_name="/upload")
        assert re.search(want, msg, re.S), (name, msg)
        chosen = target.get("value") if isinstance(target, dict) else target  # the target switches on success
        assert (chosen == app.UPLOADED) == name.startswith("nonmanifold"), target
    odd = tmp_path / "mön mesh (1).obj"
    shutil.copy(FIXTURES / "nonmanifold.obj", odd)
    _, _, msg = client.predict(handle_file(str(odd)), api_name="/upload")
    assert msg.startswith("Uploaded **m_n_mesh_1**") or msg.startswith("Uploaded **mon_mesh_1**"), msg
    with urllib.request.urlopen(url, timeout=10) as resp:  # still serving
        assert resp.status == 200


# --- knob values from API clients ---------------------------------------------------------------


def test_out_of_range_values_are_refused_or_clamped(served, monkeypatch):
    from api_inputs import quick, run_inputs
    from gradio_client.exceptions import AppError

    demo, client, _ = served
    monkeypatch.setattr(app, "REFRESH_S", 0.1)
    seen = []

    class Recording(Run):
        def __init__(self, method_cls, asset, cfg, *a, **k):
            seen.append(cfg)
            super().__init__(method_cls, asset, cfg, *a, **k)

    monkeypatch.setattr(app, "Run", Recording)
    # gradio refuses sliders, numbers and dropdowns out of their bounds before the handler runs
    for bad in ({"iterations": 10**9}, {"points": -5}, {"lr": 1e9}, {"lr": -1.0}, {"optimizer": "rmsprop"}):
        with pytest.raises(AppError, match=r"greater than maximum|less than minimum|not in the list of choices"):
            client.predict(*run_inputs(client, "deform", "torus", **{**quick(), **bad}), api_name="/run")
    # what gets through (a cleared number field) is replaced by the default and reported in the status
    status = client.predict(*run_inputs(client, "deform", "torus", **quick(lr=None)), api_name="/run")[0]
    assert status.startswith("done") and "adjusted: Learning rate: None is not a number; using 1.0" in status
    assert len(seen) == 1  # the refused calls never built a run
    for k in knobs(DeformConfig):
        v = getattr(seen[0], k.name)
        assert k.kind not in ("int", "float") or (k.lo <= v <= k.hi and math.isfinite(v)), (k.name, v)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1e300, "12abc", None, [1, 2]])
def test_from_values_never_lets_a_bad_number_through(value):
    for k in knobs(DeformConfig):
        if k.kind not in ("int", "float"):
            continue
        cfg, msgs = from_values(DeformConfig, {k.name: value})
        v = getattr(cfg, k.name)
        assert math.isfinite(v) and k.lo <= v <= k.hi and msgs, (k.name, value, v)


# --- faults during a run ------------------------------------------------------------------------


def _finished(run: Run, timeout: float = 60) -> Run:
    assert run.join(timeout), "the run did not end"
    return run


@pytest.mark.parametrize("lr", [1e6, 1e30])
def test_diverging_run_stops_with_a_message_and_keeps_a_finite_snapshot(lr):
    from recon.assets import load_builtin

    cfg = DeformConfig(lr=lr, iterations=60, points=300, sphere_level=1)  # lr far past the knob's bound
    run = _finished(Run(Deform, load_builtin("torus"), cfg, torch.device("cpu"), eval_budget=0.0).start())
    assert run.state == "error" and run.iteration < 60
    assert re.search(r"NaN/inf.*The last finite state is kept\. Try a lower learning rate", run.message), run.message
    seq, snap = run.latest_snapshot()
    assert snap is not None and np.isfinite(snap.mesh.verts).all() and snap.iteration <= run.iteration


class NaNAtThree(Deform):
    """Deform whose loss turns NaN at its third step, leaving the parameters alone."""

    name = "nan_test"

    def step(self):
        terms = super().step()
        if len(getattr(self, "_steps", [])) >= 2:
            terms = {k: torch.tensor(float("nan")) for k in terms}
        self._steps = [*getattr(self, "_steps", []), 1]
        return terms


def test_nan_loss_stops_the_run_and_keeps_the_last_finite_snapshot():
    from recon.assets import load_builtin

    cfg = DeformConfig(iterations=20, points=300, sphere_level=1)
    run = Run(NaNAtThree, load_builtin("torus"), cfg, torch.device("cpu"), eval_budget=0.0)
    run.start()
    _finished(run)
    assert run.state == "error"
    assert run.message.startswith("The loss became NaN/inf at iteration 3 (chamfer, edge, normal, laplacian, total)")
    assert run.iteration == 2 and len(run.history) == 2  # the NaN row is not recorded
    _, snap = run.latest_snapshot()
    assert snap is not None and np.isfinite(snap.mesh.verts).all() and snap.iteration <= 2


class OutOfMemory(Deform):
    """Deform whose second step runs out of memory."""

    name = "oom_test"
    title = "OOM test"

    def step(self):
        if getattr(self, "_stepped", False):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        self._stepped = True
        return super().step()


def test_out_of_memory_is_reported_as_such():
    from recon.assets import load_builtin

    cfg = DeformConfig(iterations=20, points=300, sphere_level=1)
    run = _finished(Run(OutOfMemory, load_builtin("torus"), cfg, torch.device("cpu")).start())
    assert run.state == "error"
    assert run.message.startswith("Out of memory on CPU at iteration 1: try a smaller size"), run.message
    with pytest.raises(RuntimeError, match="no result"):
        run.with_result(lambda m: m)  # its memory was released


def test_out_of_memory_in_the_page_and_the_app_keeps_serving(monkeypatch):
    from api_inputs import quick, run_inputs
    from conftest import launch
    from gradio_client import Client

    from recon import methods

    monkeypatch.setitem(methods.METHODS, OutOfMemory.name, (OutOfMemory, "always runs out of memory"))
    monkeypatch.setattr(app, "REFRESH_S", 0.1)
    app._import_pytorch3d()
    demo, url = launch(max_runs=1)
    try:
        client = Client(url, verbose=False)
        status = client.predict(*run_inputs(client, OutOfMemory.name, "torus", **quick(iterations=5)),
                                api_name="/run")[0]
        assert status.startswith("error") and "Out of memory on CPU at iteration 1" in status, status
        assert demo.recon_slots.active == 0  # its slot is free again
        status = client.predict(*run_inputs(client, "deform", "torus", **quick(iterations=2)), api_name="/run")[0]
        assert status.startswith("done · iteration 2 / 2"), status
        client.close()
    finally:
        demo.close()


# --- nothing is ever unpickled --------------------------------------------------------------------

_UNSAFE = [
    (re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|shelve|marshal)\b", re.M), "imports a pickle module"),
    (re.compile(r"\b(c?pickle|dill|cloudpickle|marshal)\.loads?\("), "unpickles"),
    (re.compile(r"\bjoblib\.load\("), "unpickles through joblib"),
    (re.compile(r"allow_pickle\s*=\s*True"), "lets numpy unpickle"),
    (re.compile(r"\.read_pickle\("), "unpickles through pandas"),
]


def test_no_pickle_and_torch_load_only_with_weights_only():
    sources = [p for p in ROOT.rglob("*.py")
               if not any(part in (".venv", ".git", "node_modules") or part.startswith(".") for part in
                          p.relative_to(ROOT).parts) and p.resolve() != Path(__file__).resolve()]
    assert any(p.name == "app.py" for p in sources)
    problems = []
    for p in sources:
        text = p.read_text(encoding="utf-8", errors="replace")
        for pattern, what in _UNSAFE:
            if pattern.search(text):
                problems.append(f"{p.relative_to(ROOT)} {what}")
        for m in re.finditer(r"\btorch\.load\(", text):
            depth, i = 1, m.end()  # the call's full argument list, however it is wrapped
            while depth and i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            if not re.search(r"weights_only\s*=\s*True", text[m.end():i]):
                problems.append(f"{p.relative_to(ROOT)}: torch.load without weights_only=True")
    assert not problems, problems
