"""Bad inputs are refused by the stage CLIs with a message naming the culprit (file, key, numbers),
and, where the input can be checked on its own, before any model is loaded: the ``no_models``
fixture makes every model loader of the stages fail the test if it is reached."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from realfake import caption, embed, evaluate, finetune, index, synthesize, train
from realfake.caption import CaptionMergeError
from realfake.index import DatasetError
from realfake.io import UnsafeFileError
from realfake.models import ModelLoadError, create_classifier
from realfake.recipes import CorruptImageError, scan_shard
from realfake.shards import sample_seed

pytestmark = pytest.mark.faults

STAGES = {"finetune": finetune, "synthesize": synthesize, "caption": caption, "embed": embed}
LOADERS = [
    (finetune, "load_sd_components"),
    (synthesize, "load_sd_pipeline"),
    (caption, "load_blip2"),
    (embed, "load_clip_vision"),
    (train, "create_classifier"),
    (evaluate, "create_classifier"),
]


@pytest.fixture()
def no_models(monkeypatch):
    """Fail the test if a stage reaches one of its model loaders."""

    def loaded(*args, **kwargs):
        raise AssertionError(f"a model was loaded before the bad input was refused: {args[:1]}")

    for module, name in LOADERS:
        monkeypatch.setattr(module, name, loaded)


class Payload:
    """Unpickling this creates ``marker``: proof that a pickle's code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def write_pickle(path: Path, marker: Path, key: str = "means") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: Payload(marker)}, path)
    return path


def finetune_argv(inputs, model: str | Path, out: Path, **files) -> list[str]:
    files = {"captions": inputs.captions, "class_means": inputs.class_means, **files}
    return [
        "--index", str(inputs.index), "--captions", str(files["captions"]),
        "--class-means", str(files["class_means"]), "--model", str(model),
        "--out", str(out / "lora.safetensors"), "--state-dir", str(out / "state"), "--max-steps", "2",
        "--batch-size", "4", "--resolution", "32", "--device", "cpu",
    ]  # fmt: skip


def synthesize_argv(inputs, model: str | Path, out: Path, **files) -> list[str]:
    files = {"captions": inputs.captions, "class_means": inputs.class_means, **files}
    lora = ["--lora", str(files["lora"])] if "lora" in files else []
    return [
        "--index", str(inputs.index), "--captions", str(files["captions"]),
        "--class-means", str(files["class_means"]), "--model", str(model), *lora, "--shard", "0",
        "--shard-size", "8", "--steps", "2", "--resolution", "32", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip


# --- the dataset -----------------------------------------------------------------------------


def index_argv(
    root: Path, out: Path, classes: int = 4, train_size: int = 24, test_size: int = 8
) -> list[str]:
    return [
        "--root", str(root), "--layout", "imagefolder", "--num-classes", str(classes),
        "--train-size", str(train_size), "--test-size", str(test_size), "--out", str(out),
    ]  # fmt: skip


def test_missing_dataset_root_is_named(tmp_path):
    with pytest.raises(DatasetError, match=f"dataset root {tmp_path / 'imagenet'} does not exist"):
        index.main(index_argv(tmp_path / "imagenet", tmp_path / "index.parquet"))
    assert not (tmp_path / "index.parquet").exists()


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"classes": 5}, "5 classes declared, 4 found in the train split"),
        ({"train_size": 30}, "30 train images declared, 24 found"),
        ({"test_size": 9}, "9 test images declared, 8 found"),
    ],
)
def test_declared_counts_differing_from_the_files_are_refused(tiny_dataset, tmp_path, declared, message):
    with pytest.raises(DatasetError, match=f"dataset at {tiny_dataset} .*{message}"):
        index.main(index_argv(tiny_dataset, tmp_path / "index.parquet", **declared))
    assert not (tmp_path / "index.parquet").exists()


def test_corrupt_and_zero_byte_jpegs_are_listed_by_path(tiny_dataset, tmp_path):
    root = shutil.copytree(tiny_dataset, tmp_path / "data")
    zero, cut = sorted((root / "train").rglob("*.jpg"))[:2]
    zero.write_bytes(b"")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(DatasetError, match="2 undecodable image") as err:
        index.main(index_argv(root, tmp_path / "index.parquet"))
    assert str(zero) in str(err.value) and str(cut) in str(err.value)
    assert not (tmp_path / "index.parquet").exists()


# --- captions --------------------------------------------------------------------------------


def captions_without_first_image(inputs, tmp_path: Path) -> tuple[Path, str]:
    captions = pd.read_parquet(inputs.captions)
    path = tmp_path / "captions.parquet"
    captions.iloc[1:].to_parquet(path)
    return path, captions["image_id"].iloc[0]


def test_caption_merge_refuses_images_without_captions(stage_inputs, tmp_path):
    shard, missing = captions_without_first_image(stage_inputs, tmp_path)
    argv = [
        "merge",
        "--inputs",
        str(shard),
        "--index",
        str(stage_inputs.index),
        "--out",
        str(tmp_path / "c.pq"),
    ]
    with pytest.raises(CaptionMergeError, match=f"1 missing \\(e.g. \\['{missing}'\\]\\)"):
        caption.main(argv)
    assert not (tmp_path / "c.pq").exists()


def test_finetune_refuses_images_without_captions(stage_inputs, tiny_zoo, tmp_path, no_models):
    captions, missing = captions_without_first_image(stage_inputs, tmp_path)
    with pytest.raises(ValueError, match=f"{captions}: 1 train images have no caption, e.g. {missing}"):
        finetune.main(finetune_argv(stage_inputs, tiny_zoo / "sd", tmp_path, captions=captions))


def test_synthesize_refuses_images_without_captions(stage_inputs, tiny_zoo, tmp_path, no_models):
    captions, missing = captions_without_first_image(stage_inputs, tmp_path)
    argv = synthesize_argv(stage_inputs, tiny_zoo / "sd", tmp_path / "s.tar", captions=captions)
    with pytest.raises(ValueError, match=f"{captions}: 1 shard rows have no caption, e.g. '{missing}'"):
        synthesize.main(argv)
    assert not (tmp_path / "s.tar").exists()


# --- visual guidance -------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["finetune", "synthesize"])
def test_embedding_width_differing_from_text_hidden_size(stage_inputs, tiny_zoo, tmp_path, no_models, stage):
    means = tmp_path / "class_means.pt"
    torch.save({"means": torch.zeros(4, 24), "counts": torch.full((4,), 6)}, means)
    argv_of = {"finetune": finetune_argv, "synthesize": synthesize_argv}[stage]
    argv = argv_of(stage_inputs, tiny_zoo / "sd", tmp_path / "out", class_means=means)
    message = (
        f"class means {means} have shape \\(4, 24\\), but visual guidance with '{tiny_zoo / 'sd'}' needs "
        "\\[num_classes, 32\\]: the CLIP image-embedding dimension \\(24\\) must equal the text encoder's "
        "hidden size \\(32\\)"
    )
    with pytest.raises(ValueError, match=message):
        STAGES[stage].main(argv)


# --- models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["finetune", "synthesize", "caption", "embed"])
def test_model_path_that_does_not_exist(stage_inputs, tmp_path, stage):
    missing = tmp_path / "models" / "sd-v1-5"
    argv = {
        "finetune": finetune_argv(stage_inputs, missing, tmp_path),
        "synthesize": synthesize_argv(stage_inputs, missing, tmp_path / "s.tar"),
        "caption": ["run", "--index", str(stage_inputs.index), "--model", str(missing)],
        "embed": ["run", "--index", str(stage_inputs.index), "--model", str(missing)],
    }[stage]
    if stage in ("caption", "embed"):
        argv += ["--shard", "0", "--shard-size", "8", "--device", "cpu", "--out", str(tmp_path / "o")]
    with pytest.raises(ModelLoadError, match=f"model path '{missing}' does not exist"):
        STAGES[stage].main(argv)


def test_hub_id_missing_from_the_cache_is_an_error_not_a_download(stage_inputs, tmp_path):
    argv = synthesize_argv(stage_inputs, "realfake-tests/no-such-model", tmp_path / "s.tar")
    with pytest.raises(ModelLoadError, match="cannot load .* 'realfake-tests/no-such-model' offline"):
        synthesize.main(argv)


# --- pickles ---------------------------------------------------------------------------------


def test_the_pickle_payload_runs_code_when_loaded_unsafely(tmp_path):
    """The refusals below are meaningful: this file does run code under ``weights_only=False``."""
    marker = tmp_path / "pickle-code-ran"
    torch.load(write_pickle(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("stage", ["finetune", "synthesize"])
def test_class_means_pickle_is_refused_unexecuted(stage_inputs, tiny_zoo, tmp_path, no_models, stage):
    marker = tmp_path / "pickle-code-ran"
    means = write_pickle(tmp_path / "class_means.pt", marker)
    argv_of = {"finetune": finetune_argv, "synthesize": synthesize_argv}[stage]
    argv = argv_of(stage_inputs, tiny_zoo / "sd", tmp_path / "out", class_means=means)
    with pytest.raises(UnsafeFileError, match=f"class means {means} is not a weights-only torch file"):
        STAGES[stage].main(argv)
    assert not marker.exists()


def test_finetune_state_pickle_is_refused_unexecuted(stage_inputs, tiny_zoo, tmp_path, no_models):
    marker = tmp_path / "pickle-code-ran"
    state = write_pickle(tmp_path / "state" / finetune.STATE_FILE, marker, key="step")
    with pytest.raises(UnsafeFileError, match=f"fine-tuning state {state} is not a weights-only torch file"):
        finetune.main(finetune_argv(stage_inputs, tiny_zoo / "sd", tmp_path))
    assert not marker.exists() and not (tmp_path / "lora.safetensors").exists()


def test_train_state_pickle_is_refused_unexecuted(stage_inputs, tmp_path, no_models):
    marker = tmp_path / "pickle-code-ran"
    state = write_pickle(tmp_path / "state" / "state.pt", marker, key="model")
    recipe = {"epochs": 1, "batch_size": 4, "opt": "sgd", "lr": 0.1, "train_size": 32, "test_size": 32}
    argv = ["--index", str(stage_inputs.index), "--real", "--num-classes", "4", "--arch", "resnet18"]
    argv += ["--model-args", json.dumps({"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "stem_width": 8})]
    argv += [
        "--recipe",
        json.dumps(recipe),
        "--state-dir",
        str(state.parent),
        "--out",
        str(tmp_path / "c.st"),
    ]
    with pytest.raises(UnsafeFileError, match=f"training state {state} is not a weights-only torch file"):
        train.main(argv)
    assert not marker.exists() and not (tmp_path / "c.st").exists()


def test_classifier_checkpoint_pickle_is_refused(stage_inputs, tmp_path, no_models):
    marker = tmp_path / "pickle-code-ran"
    checkpoint = write_pickle(tmp_path / "classifier.safetensors", marker, key="fc.weight")
    argv = [
        "--index",
        str(stage_inputs.index),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(tmp_path / "m.json"),
    ]
    with pytest.raises(
        UnsafeFileError, match=f"classifier checkpoint {checkpoint} is not a readable safetensors"
    ):
        evaluate.main(argv)
    assert not marker.exists() and not (tmp_path / "m.json").exists()


def test_pretrained_classifier_pickle_is_refused(tmp_path):
    marker = tmp_path / "pickle-code-ran"
    weights = write_pickle(tmp_path / "backbone" / "model.safetensors", marker, key="conv1.weight")
    with pytest.raises(
        UnsafeFileError, match=f"pretrained classifier {weights} is not a readable safetensors"
    ):
        create_classifier("resnet18", 4, {"layers": [1, 1, 1, 1]}, str(weights.parent))
    assert not marker.exists()


def test_lora_pickle_is_refused_before_the_pipeline_loads(stage_inputs, tiny_zoo, tmp_path, no_models):
    marker = tmp_path / "pickle-code-ran"
    lora = write_pickle(tmp_path / "lora.safetensors", marker, key="unet.lora")
    argv = synthesize_argv(stage_inputs, tiny_zoo / "sd", tmp_path / "s.tar", lora=lora)
    with pytest.raises(UnsafeFileError, match=f"LoRA {lora} is not a readable safetensors file"):
        synthesize.main(argv)
    assert not marker.exists()


# --- truncated shards ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_shard(tiny_index, tmp_path_factory) -> Path:
    """A 6-sample shard in the contract format, holding real JPEGs."""
    rows = tiny_index[tiny_index["split"] == "train"].head(6).to_dict("records")
    samples = [
        synthesize.make_sample(
            {
                **r,
                "prompt": "",
                "seed": sample_seed(r["image_id"], 0),
                "key": synthesize.sample_key(r["image_id"], 0),
            },
            Path(r["path"]).read_bytes(),
            0,
            "",
        )  # fmt: skip
        for r in rows
    ]
    path = tmp_path_factory.mktemp("shard") / "shard-00000.tar"
    synthesize.write_shard(samples, path)
    return path


def cut_shard(good: Path, where: str, out: Path) -> Path:
    """``good`` cut in the middle of a member's data, exactly between two samples, or to nothing."""
    with tarfile.open(good) as tar:
        members = tar.getmembers()
    size = {
        "mid-member": members[4].offset_data + members[4].size // 2,
        "between-samples": members[6].offset,  # no tar end marker: tarfile alone sees 2 samples, no error
        "zero-byte": 0,
    }[where]
    out.write_bytes(good.read_bytes()[:size])
    return out


def shard_training_argv(shards: list[Path], tmp_path: Path) -> list[str]:
    """``realfake.train`` on ``shards`` alone: one epoch of batch 2, output ``tmp_path / "c"``."""
    recipe = {"epochs": 1, "batch_size": 2, "opt": "sgd", "lr": 0.1, "train_size": 32, "test_size": 32}
    argv = ["--shards", *map(str, shards), "--num-classes", "4", "--arch", "resnet18"]
    argv += ["--recipe", json.dumps(recipe), "--state-dir", str(tmp_path / "st")]
    return argv + ["--out", str(tmp_path / "c")]


@pytest.mark.parametrize("where", ["mid-member", "between-samples", "zero-byte"])
def test_truncated_shard_is_named_by_every_reader(good_shard, tmp_path, where, no_models):
    assert len(scan_shard(str(good_shard))) == 6 and len(list(synthesize.read_shard(good_shard))) == 6
    bad = cut_shard(good_shard, where, tmp_path / "shard-00007.tar")
    message = f"tar shard {bad} is truncated"
    with pytest.raises(UnsafeFileError, match=message):
        scan_shard(str(bad))
    with pytest.raises(UnsafeFileError, match=message):
        list(synthesize.read_shard(bad))
    with pytest.raises(UnsafeFileError, match=message):
        train.main(shard_training_argv([good_shard, bad], tmp_path))


@pytest.mark.parametrize("workers", ["0", "2"])
def test_corrupt_jpeg_inside_a_shard_is_named_with_its_member(good_shard, tmp_path, workers):
    """A shard whose tar is intact but one sample's JPEG bytes are garbage (bit rot, a bad copy):
    training stops with an error naming the shard and the member, not a bare PIL error."""
    samples = list(synthesize.read_shard(good_shard))
    with tarfile.open(good_shard) as tar:
        jpgs = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
    bad_member = jpgs[2]
    data = bytearray(good_shard.read_bytes())
    start = bad_member.offset_data
    data[start : start + bad_member.size] = bytes(bad_member.size)  # same length: the tar stays valid
    bad = tmp_path / "shard-00003.tar"
    bad.write_bytes(bytes(data))
    assert len(scan_shard(str(bad))) == len(samples)  # the tar itself reads fine

    argv = shard_training_argv([bad], tmp_path) + ["--workers", workers]
    argv += ["--model-args", json.dumps({"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "stem_width": 8})]
    before = set(multiprocessing.active_children())
    with pytest.raises(CorruptImageError, match=f"shard {bad}, member {bad_member.name}, cannot be decoded"):
        train.main(argv)
    assert not (tmp_path / "c").exists()
    # the DataLoader workers are shut down with the error: they ignore SIGTERM, and a process
    # still holding them at its exit would wait for them forever
    assert set(multiprocessing.active_children()) <= before
