"""Deployment: the Dockerfile, the Hugging Face Space front matter, and the app started the way the
container starts it. No Docker engine runs here, so the Dockerfile is parsed and checked point by point."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import ROOT, free_port


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def instr(name: str) -> list[str]:
    return [args for word, args in dockerfile() if word == name]


def env_vars() -> dict[str, str]:
    env = {}
    for args in instr("ENV"):
        for tok in shlex.split(args):
            key, sep, value = tok.partition("=")
            assert sep, f"use ENV KEY=value, not {args!r}"
            env[key] = value
    return env


def test_dockerfile_base_and_install_are_pinned():
    steps = dockerfile()
    assert steps[0][0] == "FROM" and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", steps[0][1])
    runs = instr("RUN")
    pip = [r for r in runs if "pip install" in r]
    assert pip and all("--no-cache-dir" in r for r in pip), pip
    assert any("-r requirements.txt" in r for r in pip)
    assert re.search(r"pip install --no-cache-dir pip==[\d.]+", " ".join(pip))  # pip itself pinned
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+]+", line.strip()), line
    # requirements.txt is copied (and installed) before the code, so code edits keep the pip layer cached
    copies = instr("COPY")
    req = next(i for i, c in enumerate(copies) if "requirements.txt" in c)
    code = next(i for i, c in enumerate(copies) if "app.py" in c)
    assert req < code
    order = [w for w, _ in steps]
    assert order.index("RUN", order.index("COPY")) < [i for i, w in enumerate(order) if w == "COPY"][1]


def test_dockerfile_copies_what_the_app_needs_owned_by_root_and_read_only():
    copied = " ".join(instr("COPY"))
    modules = sorted(p.name for p in ROOT.glob("*.py"))  # app.py and the modules beside it
    assert {"app.py", "page.py"} <= set(modules)
    for path in (*modules, "recon", "assets", "requirements.txt"):
        assert re.search(rf"(^|\s){re.escape(path)}(\s|/|$)", copied), path
    assert "--chown" not in copied  # root owns the code
    steps = dockerfile()
    chmod = [i for i, (w, a) in enumerate(steps) if w == "RUN" and re.search(r"chmod -R a-w", a)]
    last_copy = max(i for i, (w, _) in enumerate(steps) if w == "COPY")
    user = max(i for i, (w, _) in enumerate(steps) if w == "USER")
    assert chmod and last_copy < chmod[0] < user  # read-only before the app's user takes over


def test_dockerfile_runs_as_uid_1000():
    assert any(re.search(r"useradd\b.*(-u|--uid)\s+1000\b", r) for r in instr("RUN"))
    users = instr("USER")
    assert users and users[-1] in ("user", "1000"), users
    # the user switch comes after every install step that needs root
    steps = dockerfile()
    last_user = max(i for i, (w, _) in enumerate(steps) if w == "USER")
    assert all(i < last_user for i, (w, a) in enumerate(steps) if w == "RUN" and "pip install" in a)


def test_dockerfile_serves_on_7860_everywhere_with_public_limits():
    assert "7860" in instr("EXPOSE")[0].split()
    env = env_vars()
    assert float(env["RECON_RUN_MAX_SECONDS"]) > 0 and float(env["RECON_SESSION_TTL"]) > 0
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert env.get("GRADIO_SERVER_PORT", "7860") == "7860"
    assert json.loads(instr("CMD")[-1]) == ["python", "app.py"]  # exec form: signals reach python


def test_dockerfile_healthcheck_needs_no_curl():
    (hc,) = instr("HEALTHCHECK")
    cmd = json.loads(hc[hc.index("CMD") + 3:].strip())
    assert cmd[:2] == ["python", "-c"], cmd
    assert "urllib.request" in cmd[2] and "http://127.0.0.1:7860/" in cmd[2]
    assert "curl" not in hc and "wget" not in hc
    compile(cmd[2], "<healthcheck>", "exec")  # the probe itself is valid Python
    assert re.search(r"--start-period=\d+s", hc)  # the first start imports torch: give it time


def test_dockerfile_one_image_for_cpu_and_gpu():
    # torch from PyPI is the CUDA build, so no CPU-only index and no CUDA base image are needed.
    text = (ROOT / "Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" not in text and "nvidia/cuda" not in text
    pins = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==2\.11\.0$", pins, re.M)


def test_dockerignore_keeps_local_state_out():
    lines = {ln.strip().rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")}
    for entry in (".venv", ".git", "runs", "screenshots", ".pytest_cache", "**/__pycache__", ".gradio"):
        assert entry in lines, entry
    for needed in ("app.py", "recon", "assets", "requirements.txt"):
        assert needed not in lines, f"{needed} is copied by the Dockerfile but ignored"


def front_matter() -> dict:
    import yaml

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "the Space configuration must open README.md"
    block = text[4:text.index("\n---\n", 4)]
    return yaml.safe_load(block)


def test_readme_front_matter_is_a_valid_space_config():
    fm = front_matter()
    assert fm["sdk"] == "gradio"
    assert fm["app_file"] == "app.py" and (ROOT / fm["app_file"]).exists()
    assert fm["python_version"] == "3.11"  # quoted in YAML: 3.11, not the float 3.1 and change
    assert isinstance(fm["title"], str) and fm["title"]
    assert isinstance(fm["emoji"], str) and fm["emoji"]
    colours = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert fm["colorFrom"] in colours and fm["colorTo"] in colours
    assert 0 < len(fm["short_description"]) <= 60  # the Hub's limit
    assert fm["pinned"] is False
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and str(fm["sdk_version"]) == pinned.group(1)


def test_readme_has_a_deploy_section():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Deploy"):]
    for needed in ("docker build", "--gpus all", "--memory", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT",
                   "RECON_MAX_RUNS", "RECON_DEVICE", "RECON_RUN_MEMORY_GB", "RECON_RUN_MAX_SECONDS", "RECON_SESSION_TTL",
                   "RECON_PAUSE_TIMEOUT", "CPU basic", "T4"):
        assert needed in section, needed
    from recon.assets import MAX_FACES
    from recon.datasets import MAX_ZIP_BYTES
    from recon.uploads import MAX_UPLOAD_BYTES

    assert f"{MAX_UPLOAD_BYTES // 2**20} MB" in section and f"{MAX_FACES:,}" in section
    assert f"{MAX_ZIP_BYTES // 2**20} MB" in section


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode("utf-8", "replace")


def test_app_runs_as_in_the_container(tmp_path):
    """`python app.py` with the image's environment: bound to 0.0.0.0 on the port the variables name."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "RECON_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline, status, page = time.monotonic() + 120, None, ""
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"app.py exited with {proc.returncode}:\n{(tmp_path / 'server.log').read_text()}"
            try:
                status, page = _get(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200, (tmp_path / "server.log").read_text()
        assert "<title>recon: 3D reconstruction playground</title>" in page or "recon: 3D reconstruction" in page
        # bound to every interface, not only loopback
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        addrs = {ln.split()[1] for ln in listening if ln.split()[3] == "0A"}  # state 0A: LISTEN
        assert f"00000000:{port:04X}" in addrs, addrs
        # the page's config names the recon components
        status, cfg = _get(f"http://127.0.0.1:{port}/config")
        assert status == 200 and '"elem_id": "run"' in cfg.replace('"elem_id":"run"', '"elem_id": "run"')
        # the healthcheck probe, as the Dockerfile runs it, against this port
        (hc,) = instr("HEALTHCHECK")
        probe = json.loads(hc[hc.index("CMD") + 3:].strip())[2].replace(":7860/", f":{port}/")
        assert subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0
        # gradio itself refuses uploads over the larger documented limit (dataset zips) before they reach the disk
        from recon.datasets import MAX_ZIP_BYTES

        assert f'"max_file_size": {MAX_ZIP_BYTES}' in cfg.replace(f'"max_file_size":{MAX_ZIP_BYTES}',
                                                                  f'"max_file_size": {MAX_ZIP_BYTES}')
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
    assert proc.returncode is not None
