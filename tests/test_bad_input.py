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

from recon.assets import MAX_FACES, AssetError
from recon.methods.deform import Deform, DeformConfig
from recon.params import knobs, validate
from recon.runner import Run
from recon.uploads import MAX_UPLOAD_BYTES, load_upload

FIXTURES = ROOT / "tests" / "fixtures" / "bad_meshes"
pytestmark = pytest.mark.filterwarnings("ignore:Faces have invalid indices:UserWarning")  # pytorch3d, then refused


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


def test_a_mesh_over_the_face_limit_is_simplified_and_says_so(tmp_path):
    n = MAX_FACES + 1
    verts = np.random.default_rng(0).random((n + 2, 3))
    faces = np.stack([np.arange(n), np.arange(n) + 1, np.arange(n) + 2], 1)
    path = tmp_path / "huge.ply"
    _binary_ply(path, verts, faces)
    assert path.stat().st_size < MAX_UPLOAD_BYTES  # over the limit for its faces, not its bytes
    asset = load_upload(path, "huge.ply")
    assert asset.num_faces <= MAX_FACES
    assert any(re.search(rf"Simplified from {n:,} to [\d,]+ faces", note) for note in asset.notes), asset.notes


def test_too_large_file_is_refused_before_parsing(tmp_path, monkeypatch):
    import recon.uploads as uploads

    def never(*_a, **_k):
        raise AssertionError("an oversize upload was parsed")

    monkeypatch.setattr(uploads, "_read_mesh", never)
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


# --- the page's upload, through the session's controller ----------------------------------------


def test_page_upload_messages(tmp_path):
    from recon.budget import Limits
    from recon.server import Server
    from recon.targets import UPLOADED_MESH
    from recon.workbench import Workbench

    wb = Workbench(Server(max_runs=1, device="cpu", limits=Limits()))
    cases = {
        "png_renamed.obj": r"⚠️ 'png\\_renamed\\.obj' is not a mesh: it looks like a PNG image",
        "nan_coords.obj": r"⚠️ 'nan\\_coords\\.obj' has NaN or infinite vertex coordinates",
        "empty.obj": r"⚠️ 'empty\\.obj' is empty",
        "bad_indices.off": r"⚠️ 'bad\\_indices\\.off' has face indices outside",
        "nonmanifold.obj": r"^Uploaded \*\*nonmanifold\*\*: 5 vertices, 3 faces.*Note: 1 edge is shared",
    }
    for name, want in cases.items():
        path = tmp_path / name
        shutil.copy(FIXTURES / name, path)
        choice, _, msg = wb.upload(str(path))
        assert re.search(want, msg, re.S), (name, msg)
        assert (choice == UPLOADED_MESH) == name.startswith("nonmanifold")
    odd = tmp_path / "[click](javascript:x) <b>me.obj"  # user text reaches the page escaped
    shutil.copy(FIXTURES / "nan_coords.obj", odd)
    _, _, msg = wb.upload(str(odd))
    assert "[click](javascript" not in msg and "<b>" not in msg and r"\[click\]" in msg
    wb.close()


# --- knob values from outside -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1e300, "12abc", None, [1, 2]])
def test_validate_never_lets_a_bad_number_through(value):
    for k in knobs(DeformConfig):
        if k.kind not in ("int", "float"):
            continue
        cfg, msgs = validate(DeformConfig, {k.name: value})
        v = getattr(cfg, k.name)
        assert math.isfinite(v) and k.lo <= v <= k.hi and msgs, (k.name, value, v)


# --- faults during a run ------------------------------------------------------------------------


def _finished(run: Run, timeout: float = 60) -> Run:
    assert run.wait_settled(timeout), "the run did not end"
    return run


@pytest.mark.parametrize("lr", [1e6, 1e30])
def test_diverging_run_stops_with_a_message_and_keeps_a_finite_snapshot(lr):
    from recon.assets import load_builtin

    cfg = DeformConfig(lr=lr, iterations=60, points=300, sphere_level=1)  # lr far past the knob's bound
    run = _finished(Run(Deform, load_builtin("torus"), cfg, torch.device("cpu"), eval_budget=0.0).start())
    view = run.poll()
    assert view.state == "error" and view.iteration < 60
    assert re.search(r"NaN/inf.*The last finite state is kept\. Try a lower learning rate", view.message), view.message
    seq, snap = run.latest_snapshot()
    assert snap is not None and np.isfinite(snap.mesh.verts).all() and snap.iteration <= view.iteration


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
    view = _finished(run).poll()
    assert view.state == "error"
    assert view.message.startswith("The loss became NaN/inf at iteration 3 (chamfer, edge, normal, laplacian, total)")
    assert view.iteration == 2 and len(view.losses) == 2  # the NaN row is not recorded
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


def test_out_of_memory_stops_the_run_and_keeps_what_was_fitted():
    from recon.assets import load_builtin

    cfg = DeformConfig(iterations=20, points=300, sphere_level=1)
    view = _finished(Run(OutOfMemory, load_builtin("torus"), cfg, torch.device("cpu")).start()).poll()
    assert view.state == "stopped"
    assert view.message.startswith("Out of memory on the CPU at iteration 1: stopped, keeping what was fitted"), \
        view.message


class OutOfMemoryAtOnce(Deform):
    name = "oom_at_once"

    def step(self):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")


def test_out_of_memory_before_any_step_is_an_error_and_frees_everything():
    from recon.assets import load_builtin

    run = _finished(Run(OutOfMemoryAtOnce, load_builtin("torus"), DeformConfig(iterations=5, sphere_level=1),
                        torch.device("cpu")).start())
    view = run.poll()
    assert view.state == "error" and view.message.startswith("Out of memory on the CPU at iteration 0")
    with pytest.raises(RuntimeError, match="no result"):
        run.with_result(lambda m: m)  # its memory was released


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
