"""The target grammar: names <-> experiments, canonical names, errors listing the valid choices."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from realfake.targets import (
    Cell,
    Choices,
    Experiment,
    TargetError,
    format_experiment,
    lora_name,
    parse_experiment,
    table_cells,
)

CHOICES = Choices(
    datasets=("in1k", "in10", "tiny"), variants=("realfake", "base", "lp-ft"), scales=(1, 2, 5, 10)
)


@pytest.mark.parametrize(
    "name, experiment",
    [
        ("in1k_x10", Experiment("in1k", scale=10, real=False, variant="realfake", seed=0)),
        ("tiny_x1", Experiment("tiny", scale=1)),
        ("in10_real", Experiment("in10", scale=0, real=True, variant=None)),
        ("in10_real+x1", Experiment("in10", scale=1, real=True)),
        ("in10_x1_base", Experiment("in10", scale=1, variant="base")),
        ("in10_x2_lp-ft_seed3", Experiment("in10", scale=2, variant="lp-ft", seed=3)),
        ("in10_real_seed1", Experiment("in10", scale=0, real=True, variant=None, seed=1)),
        ("in1k_real+x5_base", Experiment("in1k", scale=5, real=True, variant="base")),
    ],
)
def test_parse_and_format_round_trip(name, experiment):
    assert parse_experiment(name, CHOICES) == experiment
    assert format_experiment(experiment) == name == experiment.name


@pytest.mark.parametrize(
    "name, message",
    [
        ("in99_x1", "unknown dataset 'in99'; valid datasets: in10, in1k, tiny"),
        ("in10_x3", "unknown scale '3'; valid scales: 1, 2, 5, 10"),
        ("in10_x0", "unknown scale '0'; valid scales: 1, 2, 5, 10"),
        ("in10_x01", "unknown scale '01'"),
        ("in10_x1_nolora", "unknown variant 'nolora'; valid variants: base, lp-ft, realfake"),
        ("in10_synthetic", "unknown training data 'synthetic'; valid: x<k>, real, real+x<k>"),
        ("in10", "no training data given"),
        ("in10_real_base", "real-only training uses no generator: drop '_base'"),
        ("in10_x1_realfake", "defaults are omitted: write 'in10_x1'"),
        ("in10_x1_seed0", "defaults are omitted: write 'in10_x1'"),
        ("in10_x1_base_lp-ft", "too many fields"),
    ],
)
def test_errors_name_the_problem_and_the_grammar(name, message):
    with pytest.raises(TargetError) as err:
        parse_experiment(name, CHOICES)
    assert message in str(err.value)
    assert str(err.value).startswith(f"experiment {name!r}: ") and "grammar: <dataset>_<data>" in str(
        err.value
    )


def test_table_cells_expand_rows_columns_and_seeds():
    table = {"rows": ["x1", "real"], "columns": ["in10", "in1k"], "seeds": [0, 2]}
    assert table_cells(table, CHOICES) == [
        Cell("x1", "in10", 0, "in10_x1"),
        Cell("x1", "in10", 2, "in10_x1_seed2"),
        Cell("x1", "in1k", 0, "in1k_x1"),
        Cell("x1", "in1k", 2, "in1k_x1_seed2"),
        Cell("real", "in10", 0, "in10_real"),
        Cell("real", "in10", 2, "in10_real_seed2"),
        Cell("real", "in1k", 0, "in1k_real"),
        Cell("real", "in1k", 2, "in1k_real_seed2"),
    ]
    assert [c.experiment for c in table_cells({"rows": ["x1_base"], "columns": ["tiny"]}, CHOICES)] == [
        "tiny_x1_base"
    ]


def test_table_rows_must_not_name_seeds_or_unknown_choices():
    with pytest.raises(TargetError, match="names a seed"):
        table_cells({"rows": ["x1_seed1"], "columns": ["in10"]}, CHOICES)
    with pytest.raises(TargetError, match="unknown dataset 'cub'"):
        table_cells({"rows": ["x1"], "columns": ["cub"]}, CHOICES)


def test_lora_name_depends_only_on_training_flags():
    full = {"latent_prior": True, "visual_guidance": True, "mmd": True, "finetune": True}
    assert lora_name(full) == "vg-mmd"
    assert lora_name({**full, "latent_prior": False}) == "vg-mmd"
    assert lora_name({**full, "visual_guidance": False}) == "mmd"
    assert lora_name({**full, "mmd": False}) == "vg"
    assert lora_name({**full, "visual_guidance": False, "mmd": False}) == "eps"


def test_every_table_of_the_default_config_parses():
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "config.yaml").read_text())
    choices = Choices.from_config(config)
    cells = {name: table_cells(table, choices) for name, table in config["experiment"]["tables"].items()}
    assert {c.experiment for c in cells["table3"]} == {
        "in1k_x1",
        "in1k_x2",
        "in1k_x5",
        "in1k_x10",
        "in1k_real",
    }
    assert len(cells["table2"]) == 20 and len(cells["table9"]) == 9
    assert "in1k_x1_seed2" in {c.experiment for c in cells["table9"]}
