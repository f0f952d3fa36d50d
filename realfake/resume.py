"""What every resumable job (LoRA fine-tuning, classifier training) shares: the global RNG
states as tensors (so a state file loads with ``torch.load(weights_only=True)``) and a flag set by
SIGTERM/SIGUSR1, the signals SLURM sends before a time limit or pre-emption; and helper processes
(DataLoader workers, process pools) that die with the job that started them."""

from __future__ import annotations

import ctypes
import functools
import os
import random
import signal
import sys
from collections.abc import Callable

import numpy as np
import torch

# EX_TEMPFAIL: the job's state is saved; rerunning the same command continues the run (a SLURM
# requeue or a Snakemake retry does exactly that).
EXIT_RESUMABLE = 75
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Make this forked helper process die with ``parent``, the job that started it (Linux:
    ``prctl(PR_SET_PDEATHSIG, SIGKILL)``), or exit now if ``parent`` is already gone.

    torch's DataLoader workers watch their parent only from the end of their start-up on, taking
    whoever is their parent then as the one to watch: a job killed with ``kill -9`` while its
    workers start (a classifier starts new ones every epoch) left them polling forever, orphans
    holding their memory (found by tests/faults/test_chaos_dag.py). A process pool's workers wait on
    a pipe whose writing end they hold themselves, so they never see their parent die either."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _init_worker(parent: int, worker_id: int) -> None:
    die_with_parent(parent)


def worker_init() -> Callable[[int], None]:
    """A DataLoader ``worker_init_fn`` that makes every worker die with this process."""
    return functools.partial(_init_worker, os.getpid())


def rng_state() -> dict[str, torch.Tensor]:
    """All global RNG states as tensors, so the state file loads with ``weights_only=True``."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_extra": torch.tensor([pos, has_gauss, gauss], dtype=torch.float64),
        "python": torch.tensor([version, *internal], dtype=torch.int64),
        "python_gauss": torch.tensor([] if gauss_next is None else [gauss_next], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    pos, has_gauss, gauss = state["numpy_extra"].tolist()
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), gauss)
    )
    version, *internal = state["python"].tolist()
    gauss_next = state["python_gauss"].tolist()
    random.setstate((version, tuple(internal), gauss_next[0] if gauss_next else None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random: whatever draws from their global streams (model and LoRA init,
    a library's own draws) draws the same in every run with this seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class StopFlag:
    """Set by SIGTERM/SIGUSR1 (SLURM pre-emption / time-limit warnings): the loop then saves a
    resumable state at the next step boundary instead of dying with an epoch's work lost."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.raised = False

    def _set(self, signum, frame) -> None:
        self.raised = True

    def __enter__(self) -> StopFlag:
        self._previous = {s: signal.signal(s, self._set) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
