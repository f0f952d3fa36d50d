"""Config schema validation: errors name the key path and the config file line."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from realfake.config import ConfigError, key_lines, validate

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILE = REPO / "config.yaml"


@pytest.fixture()
def config():
    return yaml.safe_load(CONFIG_FILE.read_text())


def test_shipped_config_is_valid(config):
    validate(config, CONFIG_FILE)


def test_wrong_type_names_key_and_line(config):
    config["datasets"]["in1k"]["train_size"] = "many"
    with pytest.raises(ConfigError) as err:
        validate(config, CONFIG_FILE)
    line = key_lines(CONFIG_FILE.read_text())[("datasets", "in1k", "train_size")]
    assert f"config.yaml:{line}: datasets.in1k.train_size: 'many' is not of type 'integer'" in str(err.value)


def test_unknown_key_is_refused(config):
    config["synthesis"]["tiny"]["guidance"] = 2.0
    with pytest.raises(ConfigError, match=r"synthesis.tiny: .*'guidance' was unexpected"):
        validate(config, CONFIG_FILE)


def test_missing_required_key(config):
    del config["recipes"]["tiny"]["lr"]
    with pytest.raises(ConfigError, match=r"recipes.tiny: 'lr' is a required property"):
        validate(config, CONFIG_FILE)


def test_latent_cache_needs_the_centre_crop(config):
    config["finetune"]["tiny"]["latent_cache"] = True  # with the tiny setting's crop: random
    with pytest.raises(ConfigError, match=r"finetune.tiny.crop: 'center' was expected"):
        validate(config, CONFIG_FILE)
    config["finetune"]["tiny"]["crop"] = "center"
    validate(config, CONFIG_FILE)


def test_dangling_reference_lists_known_names(config):
    broken = copy.deepcopy(config)
    broken["datasets"]["tiny"]["recipe"] = "imagenet"
    with pytest.raises(ConfigError, match=r"datasets.tiny.recipe: 'imagenet' is not defined under recipes: "):
        validate(broken, CONFIG_FILE)


def test_key_lines_maps_nested_keys():
    text = "a:\n  b: 1\n  c:\n    - x\n    - y\n"
    lines = key_lines(text)
    assert lines[("a",)] == 1 and lines[("a", "b")] == 2 and lines[("a", "c", 1)] == 5


def schema_keys(node: dict, path: tuple = ()):
    """(path, property schema, required?) of every property in the schema, recursively."""
    for key, value in node.items():
        if key == "properties":
            required = set(node.get("required", []))
            for name, prop in value.items():
                yield (*path, name), prop, name in required
        if isinstance(value, dict):
            yield from schema_keys(value, path if key in ("properties", "$defs") else (*path, key))


def test_every_schema_key_has_a_description_and_optional_keys_a_default():
    from realfake.config import load_schema

    problems = []
    for path, prop, required in schema_keys(load_schema()):
        if "description" not in prop and "$ref" not in prop:
            problems.append(f"{'.'.join(path)}: no description")
        # a celeba dataset must name its attribute (config.layout_option_errors checks that)
        if not required and "default" not in prop and path != ("layout_options", "attribute"):
            problems.append(f"{'.'.join(path)}: optional without default")
    assert not problems, problems


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            ("datasets", "cub", "layout_options"),
            "datasets.cub.layout_options: layout 'cub' takes no option 'subset'",
        ),
        (("variants", "vg-only"), "variants.vg-only: visual_guidance only work with finetune: true"),
        (
            ("experiment", "tables", "table3", "rows"),
            "experiment.tables.table3: experiment 'in1k_x3': unknown scale '3'",
        ),
        (("datasets", "celeba-makeup", "layout_options"), "layout 'celeba' needs option 'attribute'"),
        (
            ("experiment", "tables", "table4", "dataset"),
            "experiment.tables.table4: source: ood needs dataset:",
        ),
        (("tiny", "tables"), "tiny.tables: 'nope' is not a table under experiment.tables"),
    ],
)
def test_cross_checks_name_key_and_problem(config, edit, message):
    values = {
        ("datasets", "cub", "layout_options"): {"subset": "in10"},
        ("variants", "vg-only"): {
            "latent_prior": True,
            "visual_guidance": True,
            "mmd": False,
            "finetune": False,
        },
        ("experiment", "tables", "table3", "rows"): ["x3"],
        ("datasets", "celeba-makeup", "layout_options"): {},
        ("experiment", "tables", "table4", "dataset"): None,
        ("tiny", "tables"): ["nope"],
    }
    *parents, key = edit
    node = config
    for parent in parents:
        node = node[parent]
    node[key] = values[edit]
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(config, CONFIG_FILE)
