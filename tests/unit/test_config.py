"""Config schema validation: errors name the key path and the config file line."""

from __future__ import annotations

import copy
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


def test_dangling_reference_lists_known_names(config):
    broken = copy.deepcopy(config)
    broken["datasets"]["tiny"]["recipe"] = "imagenet"
    with pytest.raises(ConfigError, match=r"datasets.tiny.recipe: 'imagenet' is not defined under recipes: "):
        validate(broken, CONFIG_FILE)


def test_key_lines_maps_nested_keys():
    text = "a:\n  b: 1\n  c:\n    - x\n    - y\n"
    lines = key_lines(text)
    assert lines[("a",)] == 1 and lines[("a", "b")] == 2 and lines[("a", "c", 1)] == 5
