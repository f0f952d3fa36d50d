"""The conda env of the rules pins exactly pyproject.toml's runtime dependencies, no dev tools
(conda is unreachable here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_conda_env_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {pin.split("#")[0].strip() for pin in project["dependencies"]}
    env = yaml.safe_load((REPO / "envs" / "realfake.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) == pinned
    assert all("==" in pin for pin in pip), "every dependency is pinned to the tested version"
