"""The runner: what a watcher reads through poll, pause and stop that answer at once, budgets, the
time share between steps and extras, errors as a status, and slots that queue."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.budget import Limits, RunSlots, TimeShare
from recon.methods.base import MeshData, Method, Snapshot
from recon.metrics import Metric
from recon.params import knob
from recon.runner import Run
from recon.worker import checkpoint

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ToyConfig:
    a_weight: float = knob(1.0, 0.0, 10.0, label="A weight", help="h", live=True)
    lr: float = knob(0.1, 1e-4, 1.0, label="LR", help="h", live=True)
    iterations: int = knob(1000, 1, 100000, label="Iterations", help="h")
    fail_at: int = knob(-1, -1, 100000, label="Fail at", help="h")
    nan_at: int = knob(-1, -1, 100000, label="NaN at", help="h")
    delay: float = knob(0.005, 0.0, 10.0, label="Delay", help="h")
    setup_delay: float = knob(0.0, 0.0, 60.0, label="Setup delay", help="h")
    seed: int = knob(0, 0, 100, label="Seed", help="h")


class Toy(Method):
    """A tiny quadratic: x -> 0; optionally raises or returns NaN at a chosen step."""

    name = "toy"
    title = "Toy"
    Config = ToyConfig
    tutorial = ""
    metrics = {"err": Metric("error", "err", False)}

    def __init__(self, target, cfg, device):
        super().__init__(target, cfg, device)
        for _ in range(int(cfg.setup_delay / 0.01)):  # chunked setup work, like rendering target views
            checkpoint()
            time.sleep(0.01)
        self.x = torch.ones(3, requires_grad=True)
        self.optimizer = torch.optim.SGD([self.x], lr=cfg.lr)
        self.evaluations: list[tuple[bool, int]] = []

    def step(self):
        if self.iteration + 1 == self.cfg.fail_at:
            raise ValueError("boom")
        time.sleep(self.cfg.delay)
        self.optimizer.zero_grad()
        a = (self.x**2).sum()
        if self.iteration + 1 == self.cfg.nan_at:
            a = a * float("nan")
        return self.finish_step({"a": a})

    def evaluate(self, live=False):
        self.evaluations.append((live, self.iteration))
        return {"err": float(self.x.detach().abs().max())}

    def snapshot(self):
        verts = self.x.detach().numpy()[None].repeat(3, 0)
        return Snapshot(iteration=-1, mesh=MeshData(verts, np.zeros((1, 3), np.int64)))


def toy_run(method=Toy, **cfg) -> Run:
    return Run(method, None, ToyConfig(**cfg), torch.device("cpu"))


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


def test_runs_to_completion_and_poll_hands_out_each_row_once():
    run = toy_run(iterations=50, delay=0).start()
    assert run.wait_settled(10)
    view = run.poll()
    assert view.state == "done" and view.iteration == 50 and len(view.losses) == 50 and view.settled
    assert view.losses[-1]["total"] < view.losses[0]["total"]
    assert view.final == {"err": pytest.approx(float(run._method.x.detach().abs().max()))}  # the full score at the end
    assert view.metrics[-1] == {"iteration": 50, "time": pytest.approx(view.metrics[-1]["time"]), "err": view.final["err"]}
    assert any("live_err" in m for m in view.metrics)  # live estimates on the way, in their own column
    again = run.poll(view.cursor)  # nothing new since that look
    assert again.losses == () and again.metrics == () and again.events == () and again.cursor == view.cursor
    seq, snap = run.latest_snapshot()
    assert seq >= 1 and snap.iteration == 50 and view.snapshot_seq == seq


def test_pause_and_stop_show_at_once_even_in_a_long_step():
    run = toy_run(delay=2.0).start()  # one step takes 2 s, like a Tutorial preset on a CPU
    assert wait_for(lambda: run.poll().iteration >= 1, 10)
    run.pause()
    view = run.poll()
    assert view.state == "pausing" and view.message.startswith("pausing")
    assert wait_for(lambda: run.poll().state == "paused", 5)
    held = run.poll().iteration
    time.sleep(0.3)
    assert run.poll().iteration == held
    run.resume()
    assert wait_for(lambda: run.poll().state == "running")
    time.sleep(0.5)  # well into the next step
    t0 = time.monotonic()
    run.stop()
    view = run.poll()
    assert time.monotonic() - t0 < 0.1
    assert view.state == "stopping" and re.fullmatch(r"stopping after this step \(about [12] s\)", view.message)
    assert run.wait_settled(5) and run.poll().state == "stopped"
    assert run.poll().iteration == held + 1  # the step under way was finished, no other


def test_stop_during_setup_abandons_it():
    run = toy_run(setup_delay=30.0).start()
    assert wait_for(lambda: run.poll().state == "setup")
    t0 = time.monotonic()
    run.stop()
    assert run.poll().message == "stopping: abandoning the setup"
    assert run.wait_settled(10) and time.monotonic() - t0 < 5.0  # not the 30 s of setup (~0.01 s on a quiet CPU)
    view = run.poll()
    assert view.state == "stopped" and "during the setup" in view.message and view.iteration == 0


def test_an_exception_becomes_an_error_status():
    run = toy_run(fail_at=5, delay=0).start()
    assert run.wait_settled(10)
    view = run.poll()
    assert view.state == "error" and "ValueError" in view.message and "boom" in view.message
    assert view.iteration == 4 and view.final == {}


def test_nan_loss_ends_the_run_with_a_message_and_keeps_the_last_finite_state():
    run = toy_run(nan_at=20, delay=0).start()
    assert run.wait_settled(10)
    view = run.poll()
    assert view.state == "error" and "NaN" in view.message
    assert view.iteration == 19 and all(np.isfinite(r["total"]) for r in view.losses)
    _, snap = run.latest_snapshot()
    assert snap is not None and np.isfinite(snap.mesh.verts).all()


def test_live_edits_apply_from_the_next_step_and_are_recorded():
    run = toy_run(delay=0.01).start()
    assert wait_for(lambda: run.poll().iteration > 5)
    msgs = run.update(a_weight=3.0, iterations=5, lr=99.0)
    assert any("cannot change" in m for m in msgs) and any("outside" in m for m in msgs)
    assert any("empty" in m for m in run.update(lr=None))  # a cleared box keeps the value (no crash)
    assert wait_for(lambda: len(run.poll().events) == 2)
    at = run.poll().events[0]["iteration"]
    assert wait_for(lambda: run.poll().iteration > at + 3)
    run.stop()
    run.wait_settled(5)
    rows = {r["iteration"]: r for r in run.poll().losses}
    before, after = rows[at], rows[at + 1]  # the step numbered at+1 is the first with the new weight
    assert before["total"] == pytest.approx(before["a"])
    assert after["total"] == pytest.approx(3.0 * after["a"])
    assert run.cfg.a_weight == 3.0 and run.cfg.lr == 1.0 and run.cfg.iterations == 1000


def test_slots_cap_runs_and_report_queue_positions():
    slots = RunSlots(1)
    first = Run(Toy, None, ToyConfig(), torch.device("cpu"), slots=slots).start()
    assert wait_for(lambda: first.poll().state == "running")
    second = Run(Toy, None, ToyConfig(iterations=5), torch.device("cpu"), slots=slots).start()
    third = Run(Toy, None, ToyConfig(iterations=5), torch.device("cpu"), slots=slots).start()
    assert wait_for(lambda: second.poll().queue_position == 1 and third.poll().queue_position == 2, 30)
    assert second.poll().iteration == 0 and second.poll().state == "queued"
    third.stop()  # leaving the line frees its place
    assert third.wait_settled(10) and third.poll().state == "stopped"
    first.stop()
    assert second.wait_settled(10) and second.poll().state == "done"
    assert slots.active == 0


def test_no_thread_is_left_behind():
    before = threading.active_count()
    runs = [toy_run(iterations=20, delay=0).start() for _ in range(5)]
    for r in runs:
        assert r.wait_settled(10)
        r.close()
        r.join(2)
    assert threading.active_count() == before


class SlowSnapshot(Toy):
    """Snapshots cost 20x a step: the runner must not let a watcher slow the run down."""

    def snapshot(self):
        time.sleep(0.1)
        return super().snapshot()


def test_snapshots_keep_within_their_time_budget():
    run = Run(SlowSnapshot, None, ToyConfig(iterations=300, delay=0.005), torch.device("cpu"),
              timelapse_frames=0, snapshot_budget=0.1)
    run.start()
    while not run.poll().settled:  # a page asking for a new snapshot all the time
        run.request_snapshot()
        time.sleep(0.005)
    assert run.poll().state == "done"
    # Unthrottled, 300 snapshots would take 30 s; the budget allows about 10% of ~1.6 s of steps.
    seq, _ = run.latest_snapshot()
    assert 2 <= seq <= 6


class SlowFirstEvaluation(Toy):
    """The first evaluation pays 3 s of one-time work (as rendering held-out views once did)."""

    def evaluate(self, live=False):
        if not self.evaluations:
            time.sleep(3.0)
        return super().evaluate(live)


def test_a_slow_first_evaluation_does_not_silence_the_quality_chart():
    # 0.1 s steps: the promise is a point at least every 10 s of run time with a cheap estimate. Charging
    # the first evaluation's 3 s at 5% would keep the next one waiting 57 s.
    run = Run(SlowFirstEvaluation, None, ToyConfig(iterations=250, delay=0.1), torch.device("cpu"),
              cadence=2.0).start()
    assert run.wait_settled(60)
    live = [m for m in run.poll().metrics if "live_err" in m]
    times = [m["time"] for m in live]
    assert times[0] < 0.5  # right after the first step
    gaps = np.diff(times)
    assert gaps.max() <= 2.0 + 0.3, gaps  # the cadence (2 s here) holds after the slow one
    assert run.share.spent("eval") - 3.0 <= 0.05 * run.share.work + 0.05  # the rest kept within 5%


def test_time_share_rules():
    share = TimeShare({"eval": 0.05}, cadence=10.0, min_gap={"eval": 0.5})
    assert share.due("eval")  # nothing yet: at once
    share.charge("eval", 4.0)  # a slow first one counts as no more than the cadence allows
    share.add_work(9.9)
    assert not share.due("eval")
    share.add_work(0.2)
    assert share.due("eval")
    share.charge("eval", 0.1)  # the typical cost is now the cheap one: 0.1 * 19 = 1.9 s apart
    share.add_work(1.8)
    assert not share.due("eval")
    share.add_work(0.2)
    assert share.due("eval")


def test_the_time_limit_stops_a_run_and_keeps_its_result():
    run = Run(Toy, None, ToyConfig(delay=0.01), torch.device("cpu"), limits=Limits(seconds=0.5, source="test")).start()
    assert run.wait_settled(10)
    view = run.poll()
    assert view.state == "stopped" and "time limit" in view.message and view.iteration > 5
    assert view.final  # scored and kept
    assert run.with_result(lambda m: m.iteration) == view.iteration


class Hungry(Toy):
    """Allocates 64 MB more every step, as a run past its memory budget does."""

    def step(self):
        self.hoard = getattr(self, "hoard", []) + [np.ones(8 * 2**20)]
        return super().step()


def test_the_memory_limit_stops_a_run_cleanly():
    run = Run(Hungry, None, ToyConfig(delay=0.0), torch.device("cpu"),
              limits=Limits(memory_bytes=300 * 2**20, source="test")).start()
    assert run.wait_settled(30)
    view = run.poll()
    assert view.state == "stopped" and "memory limit" in view.message
    assert 3 <= view.iteration <= 8


class OutOfMemory(Toy):
    def step(self):
        if self.iteration == 10:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return super().step()


def test_a_cpu_allocation_failure_is_an_out_of_memory_stop_that_keeps_the_fit():
    run = toy_run(OutOfMemory, delay=0).start()
    assert run.wait_settled(10)
    view = run.poll()
    assert view.state == "stopped" and "Out of memory" in view.message and view.iteration == 10
    assert run.with_result(lambda m: m.iteration) == 10


def test_a_closed_run_is_not_scored_and_frees_its_method():
    run = toy_run(delay=0.01).start()
    assert wait_for(lambda: run.poll().iteration > 3)
    run.close()
    assert run.wait_settled(10)
    assert run.poll().final == {} and run._method is None
    with pytest.raises(RuntimeError):
        run.with_result(lambda m: m)


def test_no_snapshot_after_a_stop():
    run = toy_run(delay=0.01).start()
    assert wait_for(lambda: run.poll().iteration > 3)
    run.stop()
    seq_at_stop = run.latest_snapshot()[0]
    assert run.wait_settled(5)
    assert run.latest_snapshot()[0] <= seq_at_stop + 1  # at most the one a step under way was finishing
    assert run.poll().metrics[-1]["iteration"] == run.poll().iteration  # scored where it stopped


def test_the_process_exits_cleanly_with_a_run_under_way(tmp_path):
    """A worker still inside torch when Python finalises would abort the process (std::terminate):
    the runner closes its runs at exit, so a script that never stops its run ends with status 0."""
    script = tmp_path / "leave.py"
    script.write_text(
        "import time, torch\n"
        "from recon.methods import get_method, preset_values\n"
        "from recon.runner import Run\n"
        "from recon.assets import load_builtin\n"
        "cls = get_method('deform')\n"
        "cfg = cls.Config(**{**preset_values('deform'), 'iterations': 100000})\n"
        "run = Run(cls, load_builtin('cow'), cfg, torch.device('cpu')).start()\n"
        "while run.poll().iteration < 3: time.sleep(0.05)\n"
        "print('left running', flush=True)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "left running" in proc.stdout, proc.stderr[-2000:]
    assert "terminate called" not in proc.stderr
