"""What code on a run's worker thread relies on: cooperative interruption and seeded randomness.

Interruption: a step, a target render or an evaluation can take seconds on a CPU. The runner
installs a check on its worker thread (:func:`watching`); long loops call :func:`checkpoint` between
their chunks (views, cameras, ray chunks), which raises :class:`Interrupted` as soon as the check
names a reason: a Stop, a closed session, a memory or time budget overrun. Other threads are
unaffected.

Randomness: runs step on several threads at once, and some PyTorch3D ops draw from torch's
process-wide generator (:func:`seeded`).
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from typing import Callable, Iterator

import numpy as np
import torch

_local = threading.local()


class Interrupted(Exception):
    """Long work was abandoned; the message says why (e.g. "stopped")."""


@contextlib.contextmanager
def watching(reason: Callable[[], str | None]) -> Iterator[None]:
    """Make :func:`checkpoint` on this thread raise when ``reason()`` returns a reason."""
    previous = getattr(_local, "reason", None)
    _local.reason = reason
    try:
        yield
    finally:
        _local.reason = previous


def checkpoint() -> None:
    """Raise :class:`Interrupted` if this thread's run wants its work abandoned; else return at once."""
    check = getattr(_local, "reason", None)
    if check is not None:
        why = check()
        if why:
            raise Interrupted(why)


def current() -> Callable[[], str | None] | None:
    """This thread's check, to hand to helper threads that work on its behalf."""
    return getattr(_local, "reason", None)


# --- randomness ------------------------------------------------------------------------------------

_global_rng = threading.Lock()


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the enclosed draws from torch's process-wide generator under `seed`, one thread at a time.

    Some PyTorch3D ops (point sampling on meshes, Monte-Carlo ray sampling) and torch's layer
    initialisers draw from the process-wide generator and take no generator argument. Each such
    draw happens under this lock with the global state forked and seeded, then restored, so a
    config and seed give the same run whatever else is running. Keep the enclosed work short.
    """
    device = torch.device(device)
    with _global_rng, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def derive_seed(*parts: int) -> int:
    """A seed for one draw of one run: a stable hash of (run seed, iteration, ...)."""
    return zlib.crc32(np.asarray(parts, np.int64).tobytes())
