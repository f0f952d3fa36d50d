"""Beyond the paper: kernel MMD and per-image visual guidance as ablatable variants (issue 3).

The loss math is in test_losses.py; here: the guidance lookup, LoRA names, config checks, the
fine-tuning CLI end to end on the tiny zoo, and the rules' flags in a dry run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from realfake import finetune as ft
from realfake.conditioning import ImageEmbeddings, select_guidance
from realfake.config import ConfigError, validate
from realfake.embed import EmbeddingError, load_image_guidance, save_shard
from realfake.targets import LORA_NAMES, LoraSpec, TargetError, lora_name, parse_lora_name

REPO = Path(__file__).resolve().parents[2]
HIDDEN = 32  # the tiny zoo's text-encoder width (realfake.zoo.TinySizes)
FULL = {"latent_prior": True, "visual_guidance": True, "mmd": True, "finetune": True}


def test_select_guidance_by_label_or_by_image_id():
    means = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert torch.equal(select_guidance(means, [2, 0, 2], ["a", "b", "c"]), means[[2, 0, 2]])
    per_image = ImageEmbeddings.from_ids(["x", "y", "z"], torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    assert torch.equal(select_guidance(per_image, [0, 0], ["z", "x"]), torch.tensor([[5.0, 5.0], [1.0, 0.0]]))
    assert select_guidance(None, [0], ["x"]) is None


def test_image_embeddings_refuse_missing_and_duplicate_ids():
    embeds = ImageEmbeddings.from_ids(["x"], torch.ones(1, 2))
    with pytest.raises(KeyError, match="'nope'"):
        embeds.lookup(["x", "nope"])
    with pytest.raises(ValueError):
        ImageEmbeddings.from_ids(["x", "x"], torch.ones(2, 2))


def test_lora_names_round_trip_and_separate_the_new_options():
    assert len(set(LORA_NAMES)) == 9
    for name in LORA_NAMES:
        spec = parse_lora_name(name)
        variant = {
            **FULL,
            "visual_guidance": spec.visual_guidance,
            "mmd": spec.mmd,
            "guidance_source": spec.guidance_source,
            "mmd_kind": spec.mmd_kind,
        }
        assert lora_name(variant) == name
    assert lora_name(FULL) == "vg-mmd"  # the paper's, unchanged by the defaults
    assert lora_name({**FULL, "mmd_kind": "kernel"}) == "vg-kmmd"
    assert lora_name({**FULL, "guidance_source": "image"}) == "ivg-mmd"
    assert parse_lora_name("ivg-kmmd") == LoraSpec(True, "image", True, "kernel")
    with pytest.raises(TargetError, match="valid: eps"):
        parse_lora_name("vg-xmmd")


@pytest.fixture
def config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_shipped_variants_use_their_own_loras(config):
    assert lora_name(config["variants"]["kmmd"]) == "vg-kmmd"
    assert lora_name(config["variants"]["ivg"]) == "ivg-mmd"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"mmd": False, "mmd_kind": "kernel"}, "mmd_kind: kernel needs mmd: true"),
        (
            {"visual_guidance": False, "guidance_source": "image"},
            "guidance_source: image needs visual_guidance",
        ),
        ({"mmd_kind": "gaussian"}, "'gaussian' is not one of"),
    ],
)
def test_config_refuses_new_options_without_their_module(config, edit, message):
    config["variants"]["bad"] = {**FULL, **edit}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(config)


def test_config_bandwidth_base_is_median_or_positive(config):
    config["finetune"]["tiny"]["mmd_bandwidth_base"] = "mean"
    with pytest.raises(ConfigError, match="mmd_bandwidth_base"):
        validate(config)
    config["finetune"]["tiny"]["mmd_bandwidth_base"] = 0.5
    validate(config)


@pytest.fixture(scope="module")
def embedded_inputs(tiny_zoo, tmp_path_factory) -> dict:
    """Train images of 2 classes with captions and per-image embeddings split over two shards."""
    root = tmp_path_factory.mktemp("beyond")
    rows = []
    for i in range(6):
        path = root / f"img{i}.png"
        Image.new("RGB", (40, 36), (40 * i, 255 - 40 * i, 90)).save(path)
        rows.append((f"train/c{i % 2}/{i}", str(path), i % 2, f"c{i % 2}", f"class {i % 2}", "train"))
    index = pd.DataFrame(rows, columns=["image_id", "path", "label", "class_id", "class_name", "split"])
    index.to_parquet(root / "index.parquet")
    pd.DataFrame({"image_id": index.image_id, "caption": ["a thing"] * 6}).to_parquet(
        root / "captions.parquet"
    )
    embeds = torch.randn(6, HIDDEN, generator=torch.Generator().manual_seed(3))
    shards = [root / "shard-00000.safetensors", root / "shard-00001.safetensors"]
    for shard, part in zip(shards, (slice(0, 4), slice(4, 6)), strict=True):
        save_shard(
            shard, embeds[part], torch.tensor(index.label[part].tolist()), index.image_id[part].tolist()
        )
    return {"root": root, "index": index, "embeds": embeds, "shards": shards, "zoo": tiny_zoo}


def test_load_image_guidance_keys_all_shards_by_image_id(embedded_inputs):
    guidance = load_image_guidance(embedded_inputs["shards"], str(embedded_inputs["zoo"] / "sd"))
    ids = embedded_inputs["index"].image_id.tolist()
    assert torch.equal(guidance.lookup([ids[5], ids[0]]), embedded_inputs["embeds"][[5, 0]])
    with pytest.raises(EmbeddingError, match="ids"):
        load_image_guidance(embedded_inputs["shards"] * 2, str(embedded_inputs["zoo"] / "sd"))


def test_finetune_with_kernel_mmd_and_per_image_guidance(embedded_inputs, tmp_path):
    root, out = embedded_inputs["root"], tmp_path / "lora.safetensors"
    argv = [
        "--index", str(root / "index.parquet"), "--captions", str(root / "captions.parquet"),
        "--model", str(embedded_inputs["zoo"] / "sd"), "--out", str(out), "--batch-size", "3",
        "--max-steps", "2", "--resolution", "32", "--device", "cpu", "--state-dir", str(tmp_path / "state"),
        "--mmd-kind", "kernel", "--mmd-bandwidths", "0.5", "2", "--mmd-bandwidth-base", "median",
        "--guidance-source", "image", "--image-embeddings", *map(str, embedded_inputs["shards"]),
    ]  # fmt: skip
    states = []  # the settings of every checkpoint (the last one is removed once the LoRA is written)
    save_state = ft.save_state
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ft, "save_state", lambda trainer, cfg, state_dir: (
            save_state(trainer, cfg, state_dir),
            states.append(torch.load(state_dir / ft.STATE_FILE, weights_only=True)["config"]),
        ))  # fmt: skip
        ft.main(argv)
    assert load_file(out) and states
    config = states[-1]
    assert config["mmd_kind"] == "kernel" and config["mmd_bandwidths"] == (0.5, 2.0)
    assert config["guidance_source"] == "image" and config["mmd_bandwidth_base"] is None
    log = [line for line in (tmp_path / "state" / ft.LOG_FILE).read_text().splitlines() if line]
    assert len(log) == 2 and all('"mmd"' in line for line in log)


def test_finetune_cli_needs_embeddings_for_per_image_guidance(embedded_inputs, tmp_path):
    argv = [
        "--index",
        "i",
        "--no-caption",
        "--model",
        "m",
        "--out",
        "o",
        "--state-dir",
        "s",
        "--max-steps",
        "1",
    ]
    with pytest.raises(SystemExit):
        ft.parse_args([*argv, "--guidance-source", "image"])
    with pytest.raises(SystemExit):
        ft.parse_args([*argv, "--mmd-bandwidth-base", "-1"])
    args = ft.parse_args([*argv, "--guidance-source", "image", "--image-embeddings", "a", "b"])
    assert args.class_means is None and len(args.image_embeddings) == 2
    assert (
        ft.parse_args([*argv, "--class-means", "c", "--mmd-bandwidth-base", "0.3"]).mmd_bandwidth_base == 0.3
    )


def test_make_batch_takes_each_images_own_embedding(embedded_inputs):
    table = ft.training_table(embedded_inputs["index"], None)
    guidance = ImageEmbeddings.from_ids(table.image_id.tolist(), embedded_inputs["embeds"])
    cfg = ft.FinetuneConfig(resolution=16, caption=False, guidance_source="image")
    batch = ft.make_batch(table.iloc[[4, 1]], cfg, guidance, torch.Generator().manual_seed(0))
    assert torch.equal(batch.guidance, embedded_inputs["embeds"][[4, 1]])


@pytest.mark.slow  # a dry run: ~10-25 s
def test_dry_run_passes_the_new_options_to_finetune_and_synthesis(tmp_path):
    snakemake = Path(sys.executable).with_name("snakemake")
    out = subprocess.run(
        [str(snakemake), "-n", "-p", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "results/tiny_x1_kmmd/metrics.json", "results/tiny_x1_ivg/metrics.json",
         "--configfile", str(REPO / "config.yaml")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    commands = [line for line in out.splitlines() if "python -m realfake." in line]
    kmmd = [c for c in commands if "lora/vg-kmmd/lora.safetensors >" in c]
    ivg = [c for c in commands if "lora/ivg-mmd/lora.safetensors >" in c]
    assert (
        len(kmmd) == 1
        and "--mmd-kind kernel --mmd-bandwidths 0.5 1.0 2.0 --mmd-bandwidth-base median" in kmmd[0]
    )
    assert (
        len(ivg) == 1
        and "--guidance-source image --image-embeddings results/tiny/embeddings/shard-" in ivg[0]
    )
    synth = [c for c in commands if "python -m realfake.synthesize" in c]
    ivg_synth = [c for c in synth if "synth/ivg/pass-0/" in c]
    assert len(ivg_synth) == 3 and all("--guidance-source image --image-embeddings" in c for c in ivg_synth)
    kmmd_synth = [c for c in synth if "synth/kmmd/" in c]
    assert len(kmmd_synth) == 3
    assert all("--mmd-kind" not in c and "--guidance-source" not in c for c in kmmd_synth)
