"""A malformed config.yaml or an unknown target stops ``snakemake`` at start, before any job runs:
the config errors name file, line and key path (realfake.config), the target error names the file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from realfake.config import key_lines

from .procs import REPO, SNAKEMAKE

pytestmark = pytest.mark.faults

CONFIG = REPO / "config.yaml"


def snakemake(workdir: Path, configfile: Path, *targets: str) -> subprocess.CompletedProcess:
    """A real (not dry) run with ``--cores 1``: whatever it gets to run, it runs."""
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(configfile)]
    return subprocess.run([*cmd, "--cores", "1", *targets], capture_output=True, text=True, timeout=300)


def set_value(lines: list[str], line: int, value: str) -> None:
    """Give the key on 1-based ``line`` the YAML ``value``."""
    key = lines[line - 1].split(":", 1)[0]
    lines[line - 1] = f"{key}: {value}"


def add_child(lines: list[str], line: int, child: str) -> None:
    """Insert ``child`` (``key: value``) as the first key of the mapping opened on ``line``."""
    indent = len(lines[line]) - len(lines[line].lstrip())
    lines.insert(line, " " * indent + child)


def drop_line(lines: list[str], line: int, _: str) -> None:
    del lines[line - 1]


@pytest.mark.parametrize(
    ("edit", "value", "where", "key", "message"),
    [
        pytest.param(
            set_value, "ten", ("datasets", "tiny", "num_classes"), ("datasets", "tiny", "num_classes"),
            "'ten' is not of type 'integer'", id="wrong-type",
        ),
        pytest.param(
            add_child, "guidance: 2.0", ("synthesis", "tiny"), ("synthesis", "tiny"),
            "Additional properties are not allowed ('guidance' was unexpected)", id="unknown-key",
        ),
        pytest.param(
            drop_line, "", ("recipes", "tiny", "lr"), ("recipes", "tiny"),
            "'lr' is a required property", id="missing-required-key",
        ),
    ],
)  # fmt: skip
def test_malformed_config_fails_at_start_naming_file_line_and_key(tmp_path, edit, value, where, key, message):
    lines = CONFIG.read_text().splitlines()
    edit(lines, key_lines(CONFIG.read_text())[where], value)
    config = tmp_path / "config.yaml"
    config.write_text("\n".join(lines) + "\n")
    run = snakemake(tmp_path, config)
    line = key_lines(config.read_text())[key]
    assert run.returncode != 0
    assert f"{config}:{line}: {'.'.join(key)}: {message}" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists(), "a job ran despite the invalid configuration"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "results/imagenet_x1/metrics.json",
            "experiment 'imagenet_x1': unknown dataset 'imagenet'; valid datasets:",
        ),
        ("results/tiny_x0/metrics.json", "experiment 'tiny_x0': unknown scale '0'; valid scales:"),
        ("results/tiny_x1_nosuch/metrics.json", "unknown variant 'nosuch'; valid variants: base, cip,"),
        (
            "results/tiny/synth/nosuch/pass-0/shard-00000.tar",
            "unknown variant 'nosuch'; valid variants: realfake, ",
        ),
        ("results/tiny/lora/nosuch/lora.safetensors", "unknown LoRA 'nosuch'; valid LoRAs: eps, "),
    ],
    ids=["unknown-dataset", "unknown-scale", "unknown-variant", "unknown-variant-shard", "unknown-lora"],
)
def test_unknown_target_fails_at_start_naming_it(tmp_path, target, message):
    run = snakemake(tmp_path, CONFIG, target)
    assert run.returncode != 0
    assert message in run.stdout + run.stderr
    assert not (tmp_path / "results").exists(), "a job ran for an unknown target"
