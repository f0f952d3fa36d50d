"""docs/fidelity.md and config.yaml agree: every result-shaping key has a row, and every row's
value is the config's."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `(?P<key>[a-z0-9_.-]+)` \|(?P<cells>.*)\|$")
#: Settings documented key by key; for the derived recipes only the keys they change.
COVERED = ("finetune.paper", "synthesis.paper", "recipes.in_small", "recipes.in1k")
DERIVED = {
    "recipes.fine448": "recipes.in_small",
    "recipes.celeba": "recipes.in_small",
    "finetune.celeba": "finetune.paper",
    "synthesis.celeba": "synthesis.paper",
}


def documented() -> dict[str, str]:
    """key -> the "ours" cell (inside backticks) of each row of the settings table."""
    rows = {}
    for line in (REPO / "docs" / "fidelity.md").read_text().splitlines():
        if match := ROW.match(line):
            cells = [c.strip() for c in match["cells"].split("|")]
            ours = cells[2]
            assert ours.startswith("`") and ours.endswith("`"), (
                f"{match['key']}: 'ours' {ours!r} not in backticks"
            )
            assert match["key"] not in rows, f"{match['key']} documented twice"
            rows[match["key"]] = ours[1:-1]
    return rows


def lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def test_every_documented_value_is_the_config_value():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    rows = documented()
    assert len(rows) > 60
    wrong = {
        key: (text, lookup(config, key))
        for key, text in rows.items()
        if yaml.safe_load(text) != lookup(config, key)
    }
    assert not wrong, f"docs/fidelity.md disagrees with config.yaml (doc, config): {wrong}"


def test_every_result_shaping_key_is_documented():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    rows = documented()
    missing = [f"{section}.{key}" for section in COVERED for key in lookup(config, section)]
    for section, base in DERIVED.items():
        changed = [k for k, v in lookup(config, section).items() if lookup(config, base).get(k) != v]
        missing += [f"{section}.{key}" for key in changed]
    missing = [key for key in missing if key not in rows]
    assert not missing, f"keys without a row in docs/fidelity.md: {missing}"
