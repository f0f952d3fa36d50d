"""realfake.io: atomic writes never leave a half-written file under its final name, and the
temporaries of writers that died (kill -9) are cleaned up by the next writer of the same file."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file, save

from realfake import io

REALFAKE = Path(__file__).resolve().parents[2] / "realfake"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_atomic_path_renames_on_success_and_removes_the_temporary_on_error(tmp_path):
    final = tmp_path / "out.bin"
    with io.atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.tmp-")
        tmp.write_bytes(b"complete")
    assert final.read_bytes() == b"complete"

    with pytest.raises(RuntimeError), io.atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert final.read_bytes() == b"complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_temporaries_of_dead_writers_are_removed_and_live_or_foreign_ones_kept(tmp_path):
    final = tmp_path / "shard-00000.tar"
    prefix = f".{final.name}.tmp-{io._HOST}"
    dead_file = tmp_path / f"{prefix}-{dead_pid()}-abc.tar"
    dead_dir = tmp_path / f"{prefix}-{dead_pid()}-def"
    live = tmp_path / f"{prefix}-{os.getpid()}-ghi.tar"
    foreign = tmp_path / f".{final.name}.tmp-otherhost-1-jkl.tar"
    other_artifact = tmp_path / f".shard-00001.tar.tmp-{io._HOST}-{dead_pid()}-mno.tar"
    for path in (dead_file, live, foreign, other_artifact):
        path.write_bytes(b"partial")
    dead_dir.mkdir()
    (dead_dir / "weights.safetensors").write_bytes(b"partial")

    assert sorted(io.remove_dead_temps(final)) == sorted([dead_file, dead_dir])
    assert live.exists() and foreign.exists() and other_artifact.exists()


def test_a_new_write_cleans_up_after_a_killed_writer(tmp_path):
    final = tmp_path / "metrics.json"
    left_over = tmp_path / f".metrics.json.tmp-{io._HOST}-{dead_pid()}-xyz.json"
    left_over.write_text('{"top1": 0.')
    io.write_json(final, {"top1": 0.5})
    assert not left_over.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.chaos
@pytest.mark.parametrize(
    "raised",
    [
        OSError(errno.ENOSPC, "No space left on device"),  # a plain write
        RuntimeError("SafetensorError: I/O error: No space left on device (os error 28)"),  # safetensors
        "chained",  # torch.save to a file object: a RuntimeError whose context is the OSError
    ],
)
def test_a_write_out_of_space_is_a_disk_full_error_naming_the_artifact(tmp_path, raised):
    final = tmp_path / "shard.tar"
    with pytest.raises(io.DiskFullError) as caught, io.atomic_path(final) as tmp:
        tmp.write_bytes(b"x" * 1000)
        if raised == "chained":
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("unexpected pos 704 vs 598") from None
        raise raised
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value).startswith(
        f"{final}: No space left on device (errno 28, ENOSPC) after 1,000 bytes"
    )
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(OSError) as caught, io.atomic_path(tmp_path / "a.json"):
        raise OSError(errno.EIO, "Input/output error")
    assert type(caught.value) is OSError and caught.value.errno == errno.EIO


def test_canonical_safetensors_bytes_depend_on_the_contents_not_on_the_order_given(tmp_path):
    """safetensors' own writer orders the metadata as a hash map does, differently in every process."""
    tensors = {
        "weight": torch.randn(3, 4),
        "half": torch.randn(5).half(),
        "bf": torch.randn(2, 2).bfloat16(),
        "mask": torch.tensor([True, False]),
        "count": torch.tensor(7),
        "empty": torch.empty(0, 3),
    }
    metadata = {"arch": "resnet18", "num_classes": "3", "recipe": "{}", "model_args": "{}", "note": "ünï"}
    paths = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    io.canonical_safetensors(tensors, paths[0], metadata)
    io.canonical_safetensors(dict(reversed(tensors.items())), paths[1], dict(reversed(metadata.items())))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    loaded = load_file(paths[0])
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    with safe_open(str(paths[0]), "pt") as fh:
        assert fh.metadata() == metadata
    # with at most one metadata key the library's order is fixed: the same bytes as its writer
    for one in (None, {"format": "pt"}):
        io.canonical_safetensors(tensors, paths[1], one)
        assert paths[1].read_bytes() == save(tensors, metadata=one)
    arrays = {"logits": np.arange(12, dtype=np.float32).reshape(2, 2, 3), "labels": np.arange(2)}
    io.canonical_safetensors(arrays, paths[1], {"queries": "a,b"})
    assert all(np.array_equal(load_numpy(paths[1])[k], arrays[k]) for k in arrays)
    with pytest.raises(TypeError, match="strings"):
        io.canonical_safetensors(tensors, paths[1], {"num_classes": 3})


def test_save_torch_bytes_do_not_depend_on_the_file_name(tmp_path):
    """``torch.save`` to a path names the archive's records after the file (an atomic_path temporary)."""
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "step": 3, "rng": {"torch": torch.get_rng_state()}}
    for name in ("state.pt", "other-name.pt"):
        with io.atomic_path(tmp_path / name) as tmp:
            io.save_torch(state, tmp)
    assert (tmp_path / "state.pt").read_bytes() == (tmp_path / "other-name.pt").read_bytes()
    loaded = io.load_weights_only(tmp_path / "other-name.pt")
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], state["model"]["w"])


def test_stages_write_tensors_only_through_the_byte_stable_writers():
    """A killed and resumed run must leave the bytes of an undisturbed one (issue 18)."""
    direct = re.compile(r"\bsave_file\(|\btorch\.save\(")
    calls = [
        f"{path.name}:{number}"
        for path in sorted(REALFAKE.glob("*.py"))
        if path.name != "io.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if direct.search(line)
    ]
    assert calls == []
