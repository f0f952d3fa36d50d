"""Project promises: README's quick start is what CI runs; code passes the lint gates."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_quick_start_has_two_commands_and_ci_runs_the_second():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert "snakemake" in commands[0] and "pytest" in commands[1]
    # plain `snakemake` (rule all) is the whole paper: the quick start names the tiny default
    assert commands[0].endswith("snakemake --profile profiles/local tiny")
    assert commands[1] in (REPO / ".ci" / "run").read_text()


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_clean():
    result = run(str(BIN / "ruff"), "check", "realfake", "tests")
    assert result.returncode == 0, result.stdout


def test_snakefmt_clean():
    result = run(str(BIN / "snakefmt"), "--check", "Snakefile", "rules")
    assert result.returncode == 0, result.stderr


def test_snakemake_lint_clean():
    """No lint at all: every rule passes its own name as a param (``params.rule``), not through
    ``{rule}``, which the linter reports as a variable from outside the rule."""
    result = run(str(BIN / "snakemake"), "--lint", "--cores", "1")
    out = result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition" in out, out
