"""Atomic file output and small I/O helpers shared by every stage.

An artifact only ever appears under its final name complete: writers produce a temporary
sibling (same directory, so ``os.replace`` is an atomic rename on POSIX) and rename it at the end.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import pickle
import shutil
import socket
import struct
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` only on success.

    On any exception the temporary file or directory is removed and ``final`` is untouched; what a
    killed writer could not remove is removed by the next writer of ``final`` (:func:`remove_dead_temps`).
    A write that ran out of space or quota is re-raised as :class:`DiskFullError`, naming ``final``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(final)
    prefix = f"{_temp_prefix(final)}{_HOST}-{os.getpid()}-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent, suffix=final.suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _apply_umask(tmp)
        if is_dir:
            _replace_dir(tmp, final, prefix)
        else:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
    except BaseException as err:
        code = disk_full_errno(err, final.parent) if isinstance(err, Exception) else None
        written, free = _size(tmp), _free_bytes(final.parent)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if code is not None:
            raise DiskFullError(code, final, written, free, err) from err
        raise


class DiskFullError(OSError):
    """A write of an artifact ran out of space (ENOSPC) or quota (EDQUOT): the message names the
    artifact, the errno, the filesystem and what was written before the failure."""

    def __init__(self, code: int, final: Path, written: int, free: int, cause: BaseException):
        super().__init__(code, os.strerror(code), str(final))
        self.message = (
            f"{final}: {os.strerror(code)} (errno {code}, {errno.errorcode[code]}) after {written:,} bytes "
            f"of it were written, with {free:,} bytes left free on the filesystem mounted at "
            f"{_mount_point(final.parent)}. The partial temporary was removed and nothing was written "
            f"under the final name: free space (or quota) and rerun the job. "
            f"({type(cause).__name__}: {cause})"
        )

    def __str__(self) -> str:
        return self.message


def disk_full_errno(err: BaseException, directory: Path) -> int | None:
    """ENOSPC or EDQUOT if ``err`` came from a full filesystem (or quota), else None.

    Libraries wrap the OSError differently: Python's own writes raise it, ``torch.save`` to a file
    object chains it behind a RuntimeError, safetensors quotes the OS message, and ``torch.save`` to a
    path reports only a write position mismatch; for that last case, a RuntimeError or OSError
    raised while ``directory``'s filesystem has no free block left counts as a full disk too.
    """
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT):
            return link.errno
        for code in (errno.ENOSPC, errno.EDQUOT):
            if os.strerror(code) in str(link) or f"(os error {code})" in str(link):
                return code
        link = link.__cause__ or link.__context__
    if isinstance(err, RuntimeError | OSError) and _free_bytes(directory) == 0:
        return errno.ENOSPC
    return None


def _free_bytes(directory: Path) -> int:
    """Bytes this process may still write on ``directory``'s filesystem (root may use the reserve)."""
    try:
        fs = os.statvfs(directory)
    except OSError:
        return -1
    return (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) * fs.f_frsize


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


_HOST = socket.gethostname().replace("-", "_")


def _replace_dir(tmp: Path, final: Path, prefix: str) -> None:
    """Rename the directory ``tmp`` onto ``final``, whose older version may exist.

    ``os.replace`` puts a directory only over an empty one, so an older ``final`` is first renamed
    aside onto a fresh empty temporary (atomic: of two writers racing, one takes it, the other
    finds it gone) and removed. Another writer's directory can land on ``final`` in between; then
    the loop moves that one aside too: the last rename wins, as for files, and neither writer fails.
    Readers may find ``final`` absent for that instant, never a mixture of two versions.
    """
    while True:
        try:
            os.replace(tmp, final)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        aside = Path(tempfile.mkdtemp(prefix=f"{prefix}old-", dir=final.parent))
        try:
            os.replace(final, aside)
        except FileNotFoundError:  # another writer moved it aside first
            aside.rmdir()
            continue
        shutil.rmtree(aside, ignore_errors=True)


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_dead_temps(final: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``final`` left by writers on this host that died (kill -9, OOM,
    node reboot): a temporary is named ``.<name>.tmp-<host>-<pid>-<random>``, so one whose process
    is gone is garbage. Temporaries of live writers and of other hosts (a shared filesystem) are
    kept. Returns the removed paths."""
    final = Path(final)
    removed = []
    for tmp in final.parent.glob(f"{glob.escape(_temp_prefix(final))}*"):
        host, _, rest = tmp.name[len(_temp_prefix(final)) :].partition("-")
        pid = rest.partition("-")[0]
        if host != _HOST or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _apply_umask(path: Path) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give artifacts the usual umask-based modes so
    collaborators on a shared cluster filesystem can read them."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class UnsafeFileError(ValueError):
    """A model, state or data file that is not what its loader accepts (e.g. a pickle, a cut tar)."""


def load_weights_only(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, with a refusal that names the file.

    A file that needs arbitrary Python objects to unpickle (a plain pickle, a state saved with
    classes in it) could run code when loaded: it is refused, never loaded with weights_only=False.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reasons = [line for line in str(err).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        reason = reasons[0].strip() if reasons else "not weights-only"
        raise UnsafeFileError(
            f"{what} {path} is not a weights-only torch file (it needs Python objects to unpickle, "
            f"which could run arbitrary code): refused. Re-create it with this pipeline. ({reason})"
        ) from err
    except (EOFError, KeyError, RuntimeError) as err:
        raise UnsafeFileError(
            f"{what} {path} is empty, truncated or not a torch file ({type(err).__name__}: {err})"
        ) from err


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` (an :func:`atomic_path` temporary) through an open file, so
    that the bytes are the same whatever the file's name: given a path, torch names the archive's
    records after the file (``<name>/data.pkl``), and a temporary's name is random; given a file
    object, it names them ``archive/``. Loads with :func:`load_weights_only` as before."""
    import torch

    with open(path, "wb") as fh:
        torch.save(obj, fh)


#: torch dtype -> safetensors dtype, in the order the library lays tensors out (wider first)
SAFETENSORS_DTYPES = {
    "uint64": "U64", "int64": "I64", "float64": "F64", "float32": "F32", "uint32": "U32", "int32": "I32",
    "bfloat16": "BF16", "float16": "F16", "uint16": "U16", "int16": "I16", "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}  # fmt: skip


def canonical_safetensors(
    tensors: Mapping[str, Any], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (torch tensors or numpy arrays) and the string ``metadata`` to ``path`` (an
    :func:`atomic_path` temporary) as a safetensors file whose bytes are a function of the names,
    values and metadata alone: the library's writer puts the metadata in hash-map order, which
    changes from process to process. Otherwise the bytes are the library's: an 8-byte little-endian
    header length, the header as compact JSON (``__metadata__``, here with sorted keys, then the
    tensors by dtype in :data:`SAFETENSORS_DTYPES` order, so every tensor starts aligned, and name)
    padded with spaces to a multiple of 8 bytes, then the tensors' bytes in that order."""
    import torch

    if metadata is not None and not all(isinstance(v, str) for kv in metadata.items() for v in kv):
        raise TypeError(f"safetensors metadata must map strings to strings: {dict(metadata)}")
    flat = {name: torch.as_tensor(value).detach().cpu().contiguous() for name, value in tensors.items()}
    dtypes = {name: str(tensor.dtype).removeprefix("torch.") for name, tensor in flat.items()}
    unknown = sorted(set(dtypes.values()) - SAFETENSORS_DTYPES.keys())
    if unknown:
        raise TypeError(f"safetensors has no dtype for {unknown}")
    order = list(SAFETENSORS_DTYPES)
    names = sorted(flat, key=lambda name: (order.index(dtypes[name]), name))
    header: dict[str, Any] = {} if metadata is None else {"__metadata__": dict(sorted(metadata.items()))}
    start = 0
    for name in names:
        end = start + flat[name].nbytes
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[dtypes[name]],
            "shape": list(flat[name].shape),
            "data_offsets": [start, end],
        }
        start = end
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(encoded)) + encoded)
        for name in names:
            fh.write(flat[name].reshape(-1).view(torch.uint8).numpy())


def safetensors_metadata(path: str | os.PathLike, what: str = "weights") -> dict[str, str]:
    """The string metadata of a safetensors file; any other file (e.g. a pickle named
    ``.safetensors``) is refused with an error naming it, before a model is built around it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise UnsafeFileError(f"{what} {path} is not a readable safetensors file ({err})") from err


@contextlib.contextmanager
def open_tar(path: str | os.PathLike) -> Iterator[tarfile.TarFile]:
    """Open an uncompressed tar for reading; a truncated or corrupt archive, found anywhere in the
    ``with`` block or by a check of the remaining headers at its end, is an error naming ``path``.

    tarfile takes a file cut exactly between two members for a normal end of the archive, so the
    end-of-archive marker (two zero blocks, which every tar writer appends) is checked too.
    """
    try:
        with tarfile.open(path, "r:") as tar:
            yield tar
            tar.getmembers()  # the headers the block did not iterate over
            tar.fileobj.seek(tar.offset)
            end = tar.fileobj.read(2 * tarfile.BLOCKSIZE)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UnsafeFileError(f"tar shard {path} is truncated or corrupt ({err}): re-create it") from err
    if end != bytes(2 * tarfile.BLOCKSIZE):
        raise UnsafeFileError(
            f"tar shard {path} is truncated: its members end at byte {tar.offset} without the tar "
            "end-of-archive marker (an interrupted write or copy?): re-create it"
        )


def set_offline() -> None:
    """Forbid hub downloads in this process (every job runs offline; a missing model is an error)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def set_aside(path: str | Path, why: str) -> Path:
    """Rename a resumable state that belongs to other settings to ``<name>.stale`` (replacing an
    older one) and say so: a job that Snakemake reruns because its settings or code changed must
    start afresh, not stop on the previous run's checkpoint, and nothing is deleted."""
    path = Path(path)
    stale = path.with_name(path.name + ".stale")
    os.replace(path, stale)
    print(f"{path}: {why}; starting afresh (the old state is kept as {stale})", file=sys.stderr, flush=True)
    return stale
