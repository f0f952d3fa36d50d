"""Two processes write the same artifact at once (a retried job racing its zombie, two Snakemake
runs on one tree): whatever the interleaving, the final name holds exactly one writer's complete
artifact, never a mixture or a truncation, both writers succeed, and no temporary is left.

The writers are real processes. Inside ``realfake.io.atomic_path`` they meet at a barrier halfway
through their data, so in every round both temporaries exist at the same time and both renames race.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from realfake.io import atomic_path, write_json

pytestmark = pytest.mark.chaos

ROUNDS = 150
CHUNKS = 8
CHUNK_BYTES = 8192
PARTS = ("a.bin", "b.bin", "sub/c.bin")  # files of a directory artifact (e.g. a pretrained model)


def payload(writer: int, round_: int, salt: str = "") -> bytes:
    """What ``writer`` writes in ``round_``: a pattern that differs in every chunk between writers."""
    unit = f"[writer {writer} round {round_} {salt}]".encode()
    return (unit * (CHUNKS * CHUNK_BYTES // len(unit) + 1))[: CHUNKS * CHUNK_BYTES]


def stream(path: Path, data: bytes, halfway) -> None:
    """Write ``data`` chunk by chunk (as a shard or a checkpoint is streamed), waiting at the barrier
    ``halfway`` after half of it."""
    with open(path, "wb") as fh:
        for i in range(CHUNKS):
            if i == CHUNKS // 2:
                fh.flush()
                halfway.wait(timeout=30)
            fh.write(data[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES])


def write_artifact(kind: str, final: Path, writer: int, round_: int, halfway) -> None:
    if kind == "stream":
        with atomic_path(final) as tmp:
            stream(tmp, payload(writer, round_), halfway)
    elif kind == "json":
        halfway.wait(timeout=30)
        write_json(final, {"writer": writer, "round": round_, "data": payload(writer, round_).decode()})
    elif kind == "directory":
        with atomic_path(final, is_dir=True) as tmp:
            for part in PARTS:
                (tmp / part).parent.mkdir(exist_ok=True)
                (tmp / part).write_bytes(payload(writer, round_, part))
            halfway.wait(timeout=30)
    else:
        raise ValueError(kind)


def expected(kind: str, writer: int, round_: int) -> object:
    if kind == "stream":
        return payload(writer, round_)
    if kind == "json":
        return {"writer": writer, "round": round_, "data": payload(writer, round_).decode()}
    return {part: payload(writer, round_, part) for part in PARTS}


def found(kind: str, final: Path) -> object:
    if kind == "stream":
        return final.read_bytes()
    if kind == "json":
        return json.loads(final.read_text())
    files = sorted(p for p in final.rglob("*") if p.is_file())
    return {p.relative_to(final).as_posix(): p.read_bytes() for p in files}


def writer_loop(kind: str, final: Path, writer: int, rounds: int, start, halfway, errors) -> None:
    for round_ in range(rounds):
        start.wait()
        try:
            write_artifact(kind, final, writer, round_, halfway)
        except Exception as err:  # reported by the parent; the round goes on
            errors.put(f"writer {writer}, round {round_}: {type(err).__name__}: {err}")
            halfway.reset()
        start.wait()


@pytest.mark.parametrize("kind", ["stream", "json", "directory"])
def test_two_writers_of_one_artifact_leave_exactly_one_complete_artifact(kind, tmp_path):
    ctx = multiprocessing.get_context("fork")
    final = tmp_path / ("artifact.json" if kind == "json" else "artifact")
    start, halfway, errors = ctx.Barrier(3), ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=writer_loop, args=(kind, final, w, ROUNDS, start, halfway, errors)) for w in (0, 1)
    ]
    for proc in procs:
        proc.start()
    wins, wrong = [0, 0], []
    try:
        for round_ in range(ROUNDS):
            start.wait(timeout=60)  # both writers go
            start.wait(timeout=60)  # both are done
            now = found(kind, final)
            winners = [w for w in (0, 1) if now == expected(kind, w, round_)]
            if winners:
                wins[winners[0]] += 1
            else:
                wrong.append(round_)
            leftovers = [p.name for p in tmp_path.iterdir() if p.name != final.name]
            assert not leftovers, f"round {round_}: temporaries left beside {final.name}: {leftovers}"
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, f"{len(failures)} of {2 * ROUNDS} writes failed: {failures[:3]}"
    assert not wrong, f"rounds {wrong[:10]} left a mixture or a truncated artifact under the final name"
    assert sum(wins) == ROUNDS and all(p.exitcode == 0 for p in procs)
    print(f"{kind}: {ROUNDS} rounds, the last rename won by writer 0 in {wins[0]}, writer 1 in {wins[1]}")


def test_temporaries_of_two_processes_never_share_a_name(tmp_path):
    """The temporary's name carries the host and the process id: a forked writer (same random
    state as its parent) picks its own name, so one writer never opens the other's file."""
    ctx = multiprocessing.get_context("fork")
    final, names = tmp_path / "shard.tar", ctx.Queue()

    def grab() -> None:
        with atomic_path(final) as tmp:
            names.put(tmp.name)

    with atomic_path(final) as parent_tmp:
        child = ctx.Process(target=grab)
        child.start()
        child.join(timeout=60)
        child_name = names.get(timeout=10)
        assert child_name != parent_tmp.name
        assert f"-{os.getpid()}-" in parent_tmp.name and f"-{child.pid}-" in child_name
