"""The runner: pause holds the iteration count, stop joins, errors become a status, slots queue."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from recon.methods.base import MeshData, Method, Snapshot
from recon.params import knob
from recon.runner import Run, RunSlots


@dataclass
class ToyConfig:
    a_weight: float = knob(1.0, 0.0, 10.0, label="A weight", help="h", live=True)
    lr: float = knob(0.1, 1e-4, 1.0, label="LR", help="h", live=True)
    iterations: int = knob(1000, 1, 100000, label="Iterations", help="h")
    fail_at: int = knob(-1, -1, 100000, label="Fail at", help="h")
    nan_at: int = knob(-1, -1, 100000, label="NaN at", help="h")
    delay: float = knob(0.005, 0.0, 1.0, label="Delay", help="h")


class Toy(Method):
    """A tiny quadratic: x -> 0; optionally raises or returns NaN at a chosen step."""

    name = "toy"
    title = "Toy"
    Config = ToyConfig
    tutorial = "none"

    def __init__(self, asset, cfg, device):
        super().__init__(asset, cfg, device)
        self.x = torch.ones(3, requires_grad=True)
        self.optimizer = torch.optim.SGD([self.x], lr=cfg.lr)
        self.n = 0

    def step(self):
        self.n += 1
        time.sleep(self.cfg.delay)
        if self.n == self.cfg.fail_at:
            raise ValueError("boom")
        self.optimizer.zero_grad()
        a = (self.x**2).sum()
        total = self.cfg.a_weight * a
        if self.n == self.cfg.nan_at:
            total = total * float("nan")
        total.backward()
        self.optimizer.step()
        return {"a": a.detach(), "total": total.detach()}

    def evaluate(self):
        return {"err": float(self.x.detach().abs().max())}

    def snapshot(self):
        return Snapshot(iteration=-1, mesh=MeshData(self.x.detach().numpy()[None].repeat(3, 0), np.zeros((1, 3), np.int64)))


def toy_run(**cfg) -> Run:
    return Run(Toy, None, ToyConfig(**cfg), torch.device("cpu"))


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_runs_to_completion_with_history_metrics_and_snapshot():
    run = toy_run(iterations=50, delay=0).start()
    assert run.join(10)
    assert run.state == "done" and run.iteration == 50 and len(run.history) == 50
    assert run.history[-1]["total"] < run.history[0]["total"]
    assert run.metric_history[0]["iteration"] == 1 and run.metric_history[-1]["iteration"] == 50
    seq, snap = run.latest_snapshot()
    assert seq >= 1 and snap.iteration == 50
    st = run.status()
    assert st["state"] == "done" and st["its_per_s"] > 0


def test_pause_holds_the_iteration_count_and_resume_continues():
    run = toy_run().start()
    assert wait_for(lambda: run.iteration > 5)
    run.pause()
    assert wait_for(lambda: run.state == "paused")
    held = run.iteration
    time.sleep(0.3)
    assert run.iteration == held
    run.resume()
    assert wait_for(lambda: run.iteration > held + 5)
    run.stop()
    assert run.join(2)


def test_stop_joins_the_thread_quickly_even_when_paused():
    run = toy_run().start()
    assert wait_for(lambda: run.iteration > 3)
    run.pause()
    assert wait_for(lambda: run.state == "paused")
    t0 = time.monotonic()
    run.stop()
    assert run.join(2) and time.monotonic() - t0 < 2
    assert run.state == "stopped" and "Stopped" in run.message


def test_an_exception_becomes_an_error_status():
    run = toy_run(fail_at=5, delay=0).start()
    assert run.join(10)
    assert run.state == "error" and "ValueError" in run.message and "boom" in run.message
    assert run.iteration == 4


def test_nan_loss_ends_the_run_with_a_message_and_keeps_the_last_finite_state():
    run = toy_run(nan_at=20, delay=0).start()
    assert run.join(10)
    assert run.state == "error" and "NaN" in run.message
    assert run.iteration == 19 and all(np.isfinite(r["total"]) for r in run.history)
    _, snap = run.latest_snapshot()
    assert snap is not None and np.isfinite(snap.mesh.verts).all()


def test_live_edits_apply_from_the_next_step_and_are_recorded():
    run = toy_run(delay=0.01).start()
    assert wait_for(lambda: run.iteration > 5)
    msgs = run.update(a_weight=3.0, iterations=5, lr=99.0)
    assert any("cannot change" in m for m in msgs) and any("outside" in m for m in msgs)
    assert wait_for(lambda: len(run.events) == 2)
    at = run.events[0]["iteration"]
    assert wait_for(lambda: run.iteration > at + 3)
    run.stop()
    run.join(2)
    rows = {r["iteration"]: r for r in run.history}
    before, after = rows[at], rows[at + 1]  # the step numbered at+1 is the first with the new weight
    assert before["total"] == pytest.approx(before["a"])
    assert after["total"] == pytest.approx(3.0 * after["a"])
    assert run.cfg.a_weight == 3.0 and run.cfg.lr == 1.0 and run.cfg.iterations == 1000


def test_slots_cap_simultaneous_runs_and_report_queue_positions():
    slots = RunSlots(1)
    first = Run(Toy, None, ToyConfig(), torch.device("cpu"), slots=slots).start()
    assert wait_for(lambda: first.state == "running")
    second = Run(Toy, None, ToyConfig(iterations=5), torch.device("cpu"), slots=slots).start()
    third = Run(Toy, None, ToyConfig(iterations=5), torch.device("cpu"), slots=slots).start()
    assert wait_for(lambda: second.queue_position() == 1 and third.queue_position() == 2)
    assert second.iteration == 0 and second.state == "queued"
    third.stop()  # leaving the line frees its place
    assert third.join(2) and third.state == "stopped"
    first.stop()
    assert first.join(2)
    assert second.join(10) and second.state == "done"
    assert slots.active == 0


def test_no_thread_is_left_behind():
    before = threading.active_count()
    runs = [toy_run(iterations=20, delay=0).start() for _ in range(5)]
    for r in runs:
        assert r.join(10)
        r.close()
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
    while not run.finished:  # a page asking for a new snapshot all the time
        run.request_snapshot()
        time.sleep(0.005)
    assert run.join(10) and run.state == "done"
    # Unthrottled, 300 snapshots would take 30 s; the budget allows about 10% of ~1.6 s of steps.
    seq, _ = run.latest_snapshot()
    assert 2 <= seq <= 6


def test_a_stopped_run_is_evaluated_where_it_stopped():
    run = toy_run(delay=0.01).start()
    assert wait_for(lambda: run.iteration > 10)
    run.stop()
    assert run.join(2) and run.state == "stopped"
    assert run.metric_history[-1]["iteration"] == run.iteration
