"""Train a timm classifier on synthetic shards and/or the real train split (paper Table 1, App. F).

Data: one map-style dataset over synthetic shard samples and real files (``realfake.recipes``
``SampleTable``), shuffled globally each epoch in an order that is a pure function of (seed, epoch),
which makes resuming exact.

Batches: the recipe's ``batch_size`` is the global batch of one optimizer step, whatever the number
of processes, and ``micro_batch`` the images of one forward pass of one process (the paper's
per-GPU batch): launched by ``torchrun --nproc-per-node N``, it trains data-parallel and each
process accumulates ``batch_size / (N x micro_batch)`` micro-batches per step
(:mod:`realfake.budget`, :mod:`realfake.distributed`). BatchNorm sees micro-batches.

Resuming: the state in ``--state-dir`` is saved after every epoch, and on SIGTERM/SIGUSR1 after the
current step (then the process exits with 75, EX_TEMPFAIL: rerun the same command to continue). A
resumed run equals an undisturbed one, DataLoader workers or not (:func:`epoch_loader`).

Log: every optimizer step appends its loss and learning rate to ``--state-dir/train_log.jsonl``
(:mod:`realfake.trainlog`), flushed as it goes and continued without repeats by a resumed run.
Held-out top-1 is not logged per epoch: the training job has no held-out split (its data are the
synthetic shards, or the real train split); the test split is measured once, by
``realfake.evaluate``, on the finished classifier.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from realfake import distributed, provenance
from realfake.budget import accumulation
from realfake.distributed import SINGLE, World
from realfake.io import (
    atomic_path,
    canonical_safetensors,
    load_weights_only,
    save_torch,
    set_aside,
    set_offline,
)
from realfake.models import create_classifier, resolve_device
from realfake.recipes import (
    ImageBytesDataset,
    Recipe,
    concat_tables,
    create_loss,
    create_mixup,
    create_optimizer,
    create_scheduler,
    create_train_transform,
    eval_data_config,
    parse_recipe,
    real_table,
    scan_shards,
)
from realfake.resume import (
    EXIT_RESUMABLE,
    StopFlag,
    die_with_parent,
    rng_state,
    seed_everything,
    set_rng_state,
)
from realfake.trainlog import LOG_FILE, TrainLog, keep_until

RANK_SEED_STRIDE = 100_003  # rank r > 0 seeds its augmentation RNGs with seed + r * stride


def init_worker(worker_id: int, *, parent: int) -> None:
    """Prepare a DataLoader worker of the trainer ``parent``: it dies with it
    (:func:`realfake.resume.die_with_parent`). SLURM sends SIGTERM/SIGUSR1 to the whole process
    group: only the main process reacts (:class:`StopFlag`: it saves the state at the next step and
    shuts the workers down), so a worker ignores them; torch's own SIGTERM handler would kill it, and
    the run would crash on the dead worker instead of exiting resumably. torch seeds ``random`` in
    workers but not numpy, which RandAugment and Mixup use."""
    die_with_parent(parent)
    for sig in StopFlag.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    np.random.seed(torch.initial_seed() % 2**32)


def epoch_loader(
    dataset: Dataset,
    per_process: int,
    micro_batch: int,
    *,
    seed: int,
    epoch: int,
    skip_steps: int,
    workers: int,
    world: World = SINGLE,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Micro-batches of ``epoch`` in an order fixed by (seed, epoch), minus the first ``skip_steps``
    steps: this rank's ``per_process`` share of each global batch (realfake.distributed), in
    micro-batches of ``micro_batch`` (``per_process / micro_batch`` of them make one step).

    With ``workers`` > 0 the skipped steps are replayed, loaded and thrown away, not left out: each
    worker draws its augmentations from one stream seeded per epoch, in the order of the micro-batches
    it is dealt, so a resumed epoch equals an undisturbed one only if every worker is dealt the same
    micro-batches as before. This costs the data loading (not the training) of the skipped steps.
    Without workers the augmentations draw from the main process's RNG, restored with the state, and
    the skipped samples are left out of the order.

    A generator: close it (``contextlib.closing``) to shut the workers down at once, on an error
    too. They ignore SIGTERM (:func:`init_worker`), and a process exiting with workers still alive
    would wait for them forever (multiprocessing ends daemonic children with SIGTERM, then joins
    them): a training stopped by a corrupt image hung instead of failing."""
    epoch_seed = seed * 1_000_003 + epoch
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(epoch_seed))
    order = distributed.rank_order(order, per_process, world)
    replay = skip_steps * per_process // micro_batch if workers > 0 else 0
    loader = DataLoader(
        dataset,
        batch_size=micro_batch,
        sampler=order[(0 if workers > 0 else skip_steps * per_process) :].tolist(),
        num_workers=workers,
        drop_last=True,  # as timm: Mixup needs even batches, and no tiny last batch skews BatchNorm
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=functools.partial(init_worker, parent=os.getpid()),
        generator=torch.Generator().manual_seed(epoch_seed + RANK_SEED_STRIDE * world.rank),
    )
    batches = iter(loader)  # starts the workers
    try:
        yield from itertools.islice(batches, replay, None)
    finally:
        if hasattr(batches, "_shutdown_workers"):
            batches._shutdown_workers()


@dataclass
class Trainer:
    """Model plus everything whose state must survive a restart."""

    model: torch.nn.Module
    recipe: Recipe
    device: torch.device
    world: World = SINGLE

    def __post_init__(self) -> None:
        self.network = distributed.wrap(self.model, self.device, self.world)  # DDP syncs gradients
        self.optimizer = create_optimizer(self.model, self.recipe)
        self.scheduler = create_scheduler(self.optimizer, self.recipe)
        amp = self.recipe.amp and self.device.type == "cuda"  # CPU autocast would only slow down
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp)
        self.loss_fn = create_loss(self.recipe).to(self.device)
        self.mixup = create_mixup(self.recipe, self.model.num_classes)

    def step(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """One optimisation step on this process's micro-batches of a global batch: their gradients
        accumulate (each loss / their number; DDP syncs on the last only); returns the mean loss."""
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for i, (images, labels) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or self.network is self.model else self.network.no_sync()
            images, targets = (
                images.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True),
            )
            if self.mixup is not None:
                images, targets = self.mixup(images, targets)
            with sync:
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.scaler.is_enabled()):
                    loss = self.loss_fn(self.network(images), targets) / len(micro_batches)
                self.scaler.scale(loss).backward()
            total += loss.item()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total

    def save(self, path: Path, epoch: int, step: int, fingerprint: str) -> None:
        """Atomically write the resumable state: ``epoch`` in progress, ``step`` batches of it done.
        Collective with several processes: rank 0 writes, with every rank's RNG state."""
        rngs = distributed.gather(rng_state(), self.world)
        if not self.world.is_main:
            distributed.barrier(self.world)
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "step": step,
            "fingerprint": fingerprint,
            "rng": rngs[0],
            **({"rng_ranks": rngs} if self.world.size > 1 else {}),
        }
        with atomic_path(path) as tmp:
            save_torch(state, tmp)
        distributed.barrier(self.world)

    def load(self, state: dict, path: Path, fingerprint: str) -> tuple[int, int]:
        """Restore a state saved by :meth:`save` (read by :func:`saved_state`); returns (epoch,
        step) to continue from."""
        if state["fingerprint"] != fingerprint:
            raise ValueError(
                f"state {path} belongs to another run ({state['fingerprint']}); delete it to restart"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng_ranks"][self.world.rank] if self.world.size > 1 else state["rng"])
        return state["epoch"], state["step"]


def saved_state(path: Path) -> dict | None:
    """The resumable state at ``path``, or None. Read before the model is built, so a state file
    that is not weights-only (a pickle) is refused before any model or data work."""
    return load_weights_only(path, "training state") if path.exists() else None


def fit(
    trainer: Trainer,
    dataset: Dataset,
    *,
    seed: int,
    workers: int,
    state_path: Path,
    stop: StopFlag,
    state: dict | None = None,
) -> bool:
    """Train for ``recipe.epochs`` epochs, resuming from ``state`` (saved at ``state_path``).

    Returns False when stopped by a signal (the state is saved), True when all epochs are done.
    """
    recipe, world = trainer.recipe, trainer.world
    fingerprint = f"{recipe_fingerprint(recipe)}|n={len(dataset)}|seed={seed}"
    if world.size > 1:  # the data order depends on it
        fingerprint += f"|world={world.size}"
    global_batch = recipe.batch_size
    accumulation(global_batch, recipe.micro_batch, world.size)  # a bad split fails before any step
    steps_per_epoch = len(dataset) // global_batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} training images cannot fill one global batch of {global_batch}")
    if state is not None and state["fingerprint"] != fingerprint:
        if world.is_main:  # a rerun after a change of recipe, data or code: start afresh
            set_aside(state_path, f"belongs to another run ({state['fingerprint']})")
        distributed.barrier(world)
        state = None
    epoch, step = trainer.load(state, state_path, fingerprint) if state is not None else (0, 0)
    log_path = state_path.parent / LOG_FILE
    if world.is_main:  # the log continues from the state's step (0: a fresh run, a fresh log)
        keep_until(log_path, epoch * steps_per_epoch + step)
    with TrainLog(log_path) if world.is_main else contextlib.nullcontext() as log:
        return run_epochs(
            trainer, dataset, log, epoch, step, seed=seed, workers=workers, state_path=state_path, stop=stop,
            fingerprint=fingerprint,
        )  # fmt: skip


def run_epochs(
    trainer: Trainer,
    dataset: Dataset,
    log: TrainLog | None,
    epoch: int,
    step: int,
    *,
    seed: int,
    workers: int,
    state_path: Path,
    stop: StopFlag,
    fingerprint: str,
) -> bool:
    """:func:`fit`'s epochs from ``step`` steps into ``epoch``; each step's loss and learning rate go
    to ``log`` (process 0; None on the others) as ``{"step", "epoch", "loss", "lr"}``."""
    recipe, world = trainer.recipe, trainer.world
    global_batch = recipe.batch_size
    micro, per_rank = accumulation(global_batch, recipe.micro_batch, world.size)
    steps_per_epoch = len(dataset) // global_batch
    trainer.scheduler.step(epoch)
    while epoch < recipe.epochs:
        loader = epoch_loader(
            dataset, global_batch // world.size, micro, seed=seed, epoch=epoch, skip_steps=step,
            workers=workers, world=world,
        )  # fmt: skip
        lr, start, losses = trainer.optimizer.param_groups[0]["lr"], time.perf_counter(), []
        trainer.model.train()
        with contextlib.closing(loader):  # the workers end with the epoch, also on an error
            progress = tqdm(
                loader, desc=f"epoch {epoch + 1}/{recipe.epochs}", total=(steps_per_epoch - step) * per_rank,
                leave=False, disable=not world.is_main,
            )  # fmt: skip
            pending: list[tuple[torch.Tensor, torch.Tensor]] = []
            for images, labels in progress:
                pending.append((images, labels))
                if len(pending) < per_rank:
                    continue
                losses.append(trainer.step(pending))
                pending = []
                if log is not None:
                    done = epoch * steps_per_epoch + step + len(losses)
                    log.write({"step": done, "epoch": epoch + 1, "loss": losses[-1], "lr": lr})
                stopping = distributed.any_rank(stop.raised, world)  # all ranks stop at the same step
                if stopping and step + len(losses) < steps_per_epoch:
                    trainer.save(state_path, epoch, step + len(losses), fingerprint)
                    return False
        seconds = time.perf_counter() - start
        if world.is_main:
            speed = len(losses) * global_batch / seconds
            print(
                f"epoch {epoch + 1}/{recipe.epochs} loss {np.mean(losses):.4f} lr {lr:.6g} "
                f"steps {len(losses)} time {seconds:.1f}s images/s {speed:.1f}",
                flush=True,
            )
        epoch, step = epoch + 1, 0
        trainer.scheduler.step(epoch)
        trainer.save(state_path, epoch, step, fingerprint)
        if distributed.any_rank(stop.raised, world) and epoch < recipe.epochs:
            return False
    return True


def recipe_fingerprint(recipe: Recipe) -> str:
    """The recipe as canonical JSON (also the checkpoint's ``recipe`` metadata)."""
    return json.dumps(recipe.__dict__, sort_keys=True)


def save_classifier(path: str | Path, model: torch.nn.Module, metadata: dict[str, str]) -> None:
    """Write the state dict with string metadata as safetensors, atomically and byte-stable."""
    with atomic_path(path) as tmp:
        canonical_safetensors(model.state_dict(), tmp, metadata)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see docs/stages.md)."""
    parser = argparse.ArgumentParser(prog="python -m realfake.train", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", nargs="*", default=[], help="synthetic webdataset tars")
    parser.add_argument("--index", help="index.parquet; with --real its train split is trained on too")
    parser.add_argument("--real", action="store_true", help="train on the real train split of --index")
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--arch", required=True, help="timm architecture name")
    parser.add_argument("--model-args", default="{}", help="JSON of extra timm.create_model kwargs")
    parser.add_argument("--pretrained", help="folder with model.safetensors to start from")
    parser.add_argument("--recipe", required=True, help="JSON training recipe (realfake.recipes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="torch device; auto = cuda if available, else cpu")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--state-dir", required=True, help="resumable training state lives here")
    parser.add_argument("--out", required=True, help="classifier.safetensors")
    args = parser.parse_args(argv)
    if args.real and not args.index:
        parser.error("--real needs --index")
    if not args.shards and not args.real:
        parser.error("nothing to train on: give --shards and/or --index I --real")
    return args


@provenance.stage(inputs=("shards", "index", "pretrained"))
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_offline()
    world = distributed.world_from_env()  # torchrun: one process per GPU (realfake.distributed)
    device = distributed.device_for(resolve_device(args.device), world)
    distributed.start(world, device.type)
    seed_everything(args.seed)
    recipe = parse_recipe(json.loads(args.recipe))
    state_path = Path(args.state_dir) / "state.pt"
    state = saved_state(state_path)
    tables = scan_shards(args.shards, args.workers)
    if args.real:
        tables.append(real_table(pd.read_parquet(args.index), "train"))
    table = concat_tables(tables, args.num_classes)
    model_args = json.loads(args.model_args)
    drop_path = {"drop_path_rate": recipe.drop_path} if recipe.drop_path else {}
    model = create_classifier(args.arch, args.num_classes, {**model_args, **drop_path}, args.pretrained)
    if world.rank:  # rank 0 keeps the single-process random stream; the others augment differently
        seed_everything(args.seed + RANK_SEED_STRIDE * world.rank)
    rank = f"rank {world.rank}/{world.size}: " if world.size > 1 else ""
    print(f"{rank}training on {len(table)} images ({len(args.shards)} shards, real={args.real})", flush=True)
    dataset = ImageBytesDataset(table, create_train_transform(recipe, model))
    trainer = Trainer(model.to(device), recipe, device, world)
    with StopFlag() as stop:
        finished = fit(
            trainer, dataset, seed=args.seed, workers=args.workers, state_path=state_path, stop=stop,
            state=state,
        )  # fmt: skip
    if not finished:
        distributed.stop(world)
        print(f"stopped by signal; state saved to {state_path}; rerun to resume", file=sys.stderr)
        raise SystemExit(EXIT_RESUMABLE)
    metadata = {
        "arch": args.arch,
        "num_classes": str(args.num_classes),
        "model_args": json.dumps(model_args, sort_keys=True),
        "recipe": recipe_fingerprint(recipe),
        "eval_transform": json.dumps(eval_data_config(recipe, model), sort_keys=True),
    }
    if world.is_main:
        save_classifier(args.out, model, metadata)
        # the run is done: a later run of this job (Snakemake reruns it when its code, inputs or
        # settings change) must start afresh, not resume at this run's end and rewrite its weights
        state_path.unlink(missing_ok=True)
    distributed.stop(world)


if __name__ == "__main__":
    main()
