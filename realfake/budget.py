"""Step budgets and batch splits of the training stages, shared by the stages, the DAG's resource
estimates and ``realfake estimate`` (light: no torch), so they cannot count differently.

A ``finetune:`` setting's or a recipe's ``batch_size`` is the *global* batch of one optimizer step,
whatever the number of processes; ``micro_batch`` is what one process puts through the model at
once (the paper's per-GPU batch: LoRA 8, classifiers 128 or 512). A run on ``world`` processes
accumulates ``batch_size / (world x micro_batch)`` micro-batches per step, so the same setting
gives the same steps and the same updates on 1 GPU or 8 (docs/fidelity.md; BatchNorm sees
micro-batches either way).
"""

from __future__ import annotations


def lora_steps(n_train: int, batch_size: int, max_steps: int | None, epochs: int | None) -> int:
    """The optimizer steps of a LoRA run: ``max_steps``, else ``epochs`` passes of whole global
    batches (``n_train // batch_size`` per epoch: an incomplete last batch is left out, as
    ``drop_last``, so every step sees ``batch_size`` images)."""
    if max_steps is not None:
        return max_steps
    if n_train < batch_size:
        raise ValueError(f"{n_train} training images cannot fill one global batch of {batch_size}")
    return (n_train // batch_size) * epochs


def accumulation(batch_size: int, micro_batch: int | None, world: int) -> tuple[int, int]:
    """(micro-batch, micro-batches per process per step) of a global ``batch_size`` over ``world``
    processes; ``micro_batch`` None splits the global batch evenly over the processes."""
    micro = micro_batch or batch_size // world
    if micro < 1 or batch_size % (micro * world):
        raise ValueError(
            f"batch_size {batch_size} is not a whole number of micro_batch {micro_batch} x "
            f"{world} processes: choose a micro_batch that divides batch_size / processes"
        )
    return micro, batch_size // (micro * world)


def paper_gpus(batch_size: int, micro_batch: int | None) -> int:
    """GPUs of the run a setting describes: the paper trained without accumulation, so its global
    batch is one micro-batch per GPU (LoRA 8 x 8, classifiers 128 x 8 and 512 x 8). A job asks
    for that many; a profile's ``resources: gpu=N`` caps it, and accumulation keeps the updates
    (``accumulation``). Without a micro_batch (the tiny settings): one."""
    if not micro_batch:
        return 1
    if batch_size % micro_batch:
        raise ValueError(f"batch_size {batch_size} is not a whole number of micro_batch {micro_batch}")
    return batch_size // micro_batch
