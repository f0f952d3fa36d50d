"""Shared fixtures: the tiny zoo and tiny dataset, built once per test session (offline)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# realfake.diskcache (FLOP counts, planned job lists): one fresh cache per test session, not ~/.cache
os.environ.setdefault("REALFAKE_CACHE", tempfile.mkdtemp(prefix="realfake-cache-"))
torch.set_num_threads(1)


def install_scontrol_shortcut() -> None:
    """Every snakemake start imports the SLURM executor plugin, which runs `scontrol show config`
    whenever SLURM's commands are installed; with no controller up (the SLURM test installs the
    packages, then stops its cluster) that waits ~9 s for nothing, at each of the tests' dozens of
    snakemake calls. A `scontrol` first on PATH asks `scontrol ping` (instant either way) and
    answers "down" at once, else hands over to the real command (found on the original PATH)."""
    shortcut = Path(tempfile.mkdtemp(prefix="realfake-scontrol-"))
    script = shortcut / "scontrol"
    script.write_text(
        "#!/bin/sh\n"
        f"real=$(PATH='{os.environ['PATH']}' command -v scontrol) || exit 127\n"
        '[ "$1" = ping ] || "$real" ping >/dev/null 2>&1 || exit 1\n'
        'exec "$real" "$@"\n'
    )
    script.chmod(0o755)
    atexit.register(shutil.rmtree, shortcut, True)
    os.environ["PATH"] = f"{shortcut}{os.pathsep}{os.environ['PATH']}"


install_scontrol_shortcut()

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """Path of a freshly built tiny model zoo (sd/, clip/, blip2/, classifier/)."""
    from realfake.zoo import TinySizes, build_zoo

    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_zoo(out, TinySizes(), num_classes=4)
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Root of a small generated ImageNet-style dataset: 4 classes, 6 train + 2 test each, 64 px."""
    from realfake.tinydata import generate_dataset

    root = tmp_path_factory.mktemp("data") / "tiny"
    generate_dataset(root, num_classes=4, train_per_class=6, test_per_class=2, image_size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_index(tiny_dataset):
    """index DataFrame of :func:`tiny_dataset` (24 train, 8 test rows)."""
    from realfake.index import build_index

    return build_index(tiny_dataset, layout="imagefolder", num_classes=4, train_size=24, test_size=8)


@dataclass(frozen=True)
class TinyRun:
    """A finished ``snakemake tiny`` in ``work``, run from a copy of the workflow in ``src`` (so a
    test may edit the copy's modules to probe staleness, never the checkout)."""

    src: Path
    work: Path

    @property
    def results(self) -> Path:
        return self.work / "results"

    def snakemake(self, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
        cmd = [str(BIN / "snakemake"), "-s", str(self.src / "Snakefile"), "-d", str(self.work)]
        cmd += ["--configfile", str(self.src / "config.yaml")]
        cmd += ["--profile", str(self.src / "profiles" / "local")]
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def copy_workflow(dst: Path) -> Path:
    """Snakefile, config and everything the rules read (rules, package, profiles, envs, report
    captions) copied to ``dst``."""
    dst.mkdir(parents=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, dst / name)
    for name in ("rules", "realfake", "profiles", "envs", "docs"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


#: What the DAG builds before any tiny target: the pretraining corpus and the pretrained zoo (rules/zoo.smk),
#: with their provenance records and Snakemake's metadata
PRETRAINED = (
    "results/zoo",
    "results/data/tiny-corpus",
    "results/data/tiny-corpus.prov.json",
    ".snakemake/metadata",
)


@pytest.fixture(scope="session")
def pretrained_world(tmp_path_factory) -> Path:
    """A work directory holding the tiny zoo pretrained by the DAG (rules/zoo.smk) from this
    checkout's config: built once per session (minutes), then seeded into every end-to-end run's
    work directory (:func:`seed_pretrained`) instead of being pretrained again per test."""
    root = tmp_path_factory.mktemp("pretrained")
    run = TinyRun(copy_workflow(root / "src"), root / "work")
    zoo = "results/zoo/tiny"
    done = run.snakemake(*(f"{zoo}/{part}" for part in ("sd", "clip", "sscd")))
    assert done.returncode == 0, done.stderr[-5000:]
    return run.work


def seed_pretrained(world: Path, work: Path) -> None:
    """Copy the pretrained zoo, its corpus and Snakemake's records of them into ``work`` (times
    kept), so a DAG there finds them up to date and builds only what follows them."""
    for rel in PRETRAINED:
        if (world / rel).is_dir():
            shutil.copytree(world / rel, work / rel, dirs_exist_ok=True, symlinks=True)
        else:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(world / rel, work / rel)


@pytest.fixture(scope="session")
def seed_world(pretrained_world):
    """``seed(work)``: put the session's pretrained zoo into the work directory ``work``."""
    return lambda work: seed_pretrained(pretrained_world, Path(work))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, pretrained_world) -> TinyRun:
    """The tiny default DAG (target ``tiny``), built once per session and shared by the end-to-end
    tests (pipeline, provenance, SLURM comparison): each full tiny run costs minutes of CI.
    Tests that change it (a flipped byte, an edited module) restore it before they return."""
    root = tmp_path_factory.mktemp("tiny_run")
    run = TinyRun(copy_workflow(root / "src"), root / "work")
    seed_pretrained(pretrained_world, run.work)
    done = run.snakemake("tiny")
    assert done.returncode == 0, done.stderr[-5000:]
    return run
