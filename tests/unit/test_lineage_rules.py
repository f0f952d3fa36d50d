"""realfake.lineage.rule_of: the rule named for a provenance record. A record names its rule
(every rule's shell sets REALFAKE_RULE={params.rule}; tests/unit/test_dag.py checks each planned job
passes its own name); a record written before that is told apart by its stage and output path,
also when several rules run the same stage module (the LiRA shadow rules reuse finetune,
synthesize and train)."""

from __future__ import annotations

import pytest

from realfake.lineage import rule_of


@pytest.mark.parametrize(
    ("stage", "output", "rule"),
    [
        ("train", "results/tiny_x1/classifier.safetensors", "train_classifier"),
        ("train", "results/tiny/lira/real/model-0/classifier.safetensors", "lira_train_classifier"),
        ("finetune", "results/tiny/lora/vg-mmd/lora.safetensors", "finetune_lora"),
        ("finetune", "results/in10/lira/synthetic/model-15/lora.safetensors", "lira_finetune_lora"),
        ("synthesize", "results/in1k/synth/realfake/pass-9/shard-00064.tar", "synthesize_shard"),
        ("synthesize", "results/tiny/lira/synthetic/model-3/synth/shard-00000.tar", "lira_synthesize_shard"),
        ("embed means", "results/tiny/class_means.pt", "class_means"),
        ("caption run", "results/tiny/captions/shard-00001.parquet", "caption_shard"),
        ("figures curves", "results/figures/curves/lora/tiny/vg-mmd.json", "figure_lora_curves"),
        ("figures curves", "results/figures/curves/classifier/tiny_x1.png", "figure_classifier_curves"),
    ],
)
def test_rule_is_told_apart_by_the_output_path(stage, output, rule):
    assert rule_of({"stage": stage, "outputs": [{"path": output}]}) == rule


def test_recorded_rule_wins():
    record = {
        "stage": "train",
        "rule": "lira_train_classifier",
        "outputs": [{"path": "elsewhere/c.safetensors"}],
    }
    assert rule_of(record) == "lira_train_classifier"
    assert rule_of(
        {**record, "rule": None, "outputs": [{"path": "results/tiny_x1/classifier.safetensors"}]}
    ) == (
        "train_classifier"
    )  # a record written before rules named themselves (or run by hand): from its output path


def test_unknown_stage_falls_back_to_its_name():
    assert rule_of({"stage": "no such stage", "outputs": []}) == "no such stage"
