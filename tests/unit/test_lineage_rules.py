"""realfake.lineage.rule_of: the rule named for a provenance record, also when several rules run
the same stage module (the LiRA shadow rules reuse finetune, synthesize and train)."""

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


def test_unknown_stage_falls_back_to_its_name():
    assert rule_of({"stage": "no such stage", "outputs": []}) == "no such stage"
