"""Synthesis of one shard (realfake.synthesize) against the tiny Stable Diffusion of the zoo.

Images are generated at 32 px with 4 sampler steps (img2img keeps 3): the code paths are those
of the 512 px / 30 step runs, at a cost of well under a second per call on one thread.
"""

from __future__ import annotations

import hashlib
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from realfake.synthesize import (
    SynthesisSettings,
    ahead,
    condition_embeds,
    encode_jpeg,
    generate_batch,
    generators,
    in_background,
    load_image,
    load_pipeline,
    main,
    make_sample,
    read_shard,
    sample_key,
    shard_plan,
    synthesize,
    to_pil,
    write_shard,
)

FAST = SynthesisSettings(steps=4, resolution=32)
TEMPLATE = "photo of {class_name}, {caption}"
NEGATIVE = "distorted, unrealistic, blurry, out of frame"
CLASS_NAMES = ["red fox", "blue whale", "green frog"]
TRAIN_LABELS = [1, 0, 2, 0, 1, 2]  # deliberately not label-sorted: output order must follow the index


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_data(root: Path) -> Path:
    """index.parquet, captions.parquet, class_means.pt of 6 train + 2 test 64 px images, 3 classes."""
    rng = np.random.default_rng(0)
    rows = []
    for i, label in enumerate(TRAIN_LABELS + [0, 1]):
        split = "train" if i < len(TRAIN_LABELS) else "test"
        image_id = f"{'train' if split == 'train' else 'val'}/c{label}/img_{i:02d}"
        path = root / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        base = np.zeros((64, 64, 3)) + 200 * np.eye(3)[label]
        Image.fromarray((base + rng.integers(0, 55, (64, 64, 3))).astype(np.uint8)).save(path)
        rows.append((image_id, str(path), label, f"c{label}", CLASS_NAMES[label], split))
    index = pd.DataFrame(rows, columns=["image_id", "path", "label", "class_id", "class_name", "split"])
    captions = pd.DataFrame({"image_id": index["image_id"], "caption": ["a bright photo", ""] * 4})
    index.to_parquet(root / "index.parquet")
    captions.to_parquet(root / "captions.parquet")
    # Norm ~10x that of a text token: the random tiny UNet's cross-attention barely notices a
    # token of ordinary size, and these tests check that the token reaches it, not its effect size.
    means = 10 * torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    torch.save({"means": means, "counts": torch.full((3,), 2)}, root / "class_means.pt")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_data(tmp_path_factory.mktemp("synth_data"))


@pytest.fixture(scope="module")
def pipe(tiny_zoo):
    return load_pipeline(str(tiny_zoo / "sd"), None, "cpu")


@pytest.fixture(scope="module")
def lora_file(tiny_zoo, tmp_path_factory):
    """A diffusers-format LoRA of the tiny UNet with random (non-zero) up and down weights."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(tiny_zoo / "sd" / "unet")
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]
    )
    unet.add_adapter(config)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    out = tmp_path_factory.mktemp("lora")
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)
    return out / "pytorch_lora_weights.safetensors"


def plan_of(data, use_caption: bool = True, shard: int = 0, size: int = 4) -> pd.DataFrame:
    index = pd.read_parquet(data / "index.parquet")
    captions = pd.read_parquet(data / "captions.parquet")
    return shard_plan(index, captions, shard, size, 0, 0, TEMPLATE, use_caption)


def generate(pipe, data, plan, settings=FAST, guidance: bool = True) -> list[Image.Image]:
    means = torch.load(data / "class_means.pt", weights_only=True)["means"]
    guide = means[torch.tensor(plan["label"].tolist())] if guidance else None
    positive, negative = condition_embeds(pipe, list(plan["prompt"]), guide, NEGATIVE)
    images = None if settings.txt2img else [load_image(p, settings.resolution) for p in plan["path"]]
    return generate_batch(pipe, images, positive, negative, generators(plan["seed"]), settings)


def fake_samples(n: int) -> list[dict]:
    rng = np.random.default_rng(1)
    samples = []
    for i in range(n):
        jpeg = encode_jpeg(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)), 90)
        row = {
            "image_id": f"train/c{i}/x.{i}",
            "label": i % 3,
            "class_name": "fox",
            "seed": 7 + i,
            "prompt": f"p{i}",
        }
        samples.append(make_sample({**row, "key": sample_key(row["image_id"], 2)}, jpeg, 2, NEGATIVE))
    return samples


def test_sample_key_has_no_dot_so_webdataset_sees_plain_extensions():
    assert sample_key("train/t003/t003_0007", 1) == "train__t003__t003_0007__p1"
    assert "." not in sample_key("train/a/b.c", 0)


def test_shard_plan_keeps_index_order_and_builds_prompts_and_seeds(data):
    plan = plan_of(data)
    assert list(plan["label"]) == TRAIN_LABELS[:4]
    assert plan["prompt"].iloc[0] == "photo of blue whale, a bright photo"
    assert plan["prompt"].iloc[1] == "photo of red fox"  # empty caption: no dangling comma
    assert list(plan_of(data, use_caption=False)["prompt"]) == [
        f"photo of {CLASS_NAMES[t]}" for t in TRAIN_LABELS[:4]
    ]
    assert len(set(plan["seed"])) == 4 and plan["seed"].equals(plan_of(data)["seed"])
    assert len(plan_of(data, shard=1)) == 2


def test_shard_plan_refuses_missing_captions(data):
    index = pd.read_parquet(data / "index.parquet")
    with pytest.raises(ValueError, match="no caption"):
        shard_plan(index, pd.DataFrame({"image_id": [], "caption": []}), 0, 4, 0, 0, TEMPLATE)


def test_load_image_squashes_by_default_and_crops_on_request(tmp_path):
    """The official code's .resize keeps the whole field of view; crop keeps the aspect."""
    wide = np.zeros((40, 80, 3), dtype=np.uint8)
    wide[:, :20] = 255  # a white left quarter: inside the squashed image, cut off by a centre crop
    Image.fromarray(wide).save(tmp_path / "wide.png")
    squashed = np.asarray(load_image(tmp_path / "wide.png", 32))
    cropped = np.asarray(load_image(tmp_path / "wide.png", 32, "crop"))
    assert squashed.shape == cropped.shape == (32, 32, 3)
    assert squashed[:, :6].mean() > 240 and squashed[:, 10:].mean() < 15
    assert cropped.max() < 15  # the centre 40 x 40 is all black
    with pytest.raises(ValueError, match="prior fit 'pad'"):
        load_image(tmp_path / "wide.png", 32, "pad")


def test_guidance_token_in_both_branches(pipe):
    """branches=both puts the token at the last position of the negative embeds too."""
    guide = torch.full((2, pipe.text_encoder.config.hidden_size), 3.0)
    pos, neg = condition_embeds(pipe, ["a", "b"], guide, NEGATIVE)
    pos2, neg2 = condition_embeds(pipe, ["a", "b"], guide, NEGATIVE, "both")
    assert torch.equal(pos, pos2) and torch.equal(pos[:, -1], guide)
    assert not torch.equal(neg[:, -1], guide) and torch.equal(neg2[:, -1], guide)
    assert torch.equal(neg[:, :-1], neg2[:, :-1])
    with pytest.raises(ValueError, match="guidance branches"):
        condition_embeds(pipe, ["a"], guide[:1], NEGATIVE, "negative")


def test_write_read_round_trip(tmp_path):
    samples = fake_samples(3)
    write_shard(samples, tmp_path / "s.tar")
    back = list(read_shard(tmp_path / "s.tar"))
    assert [b["key"] for b in back] == [s["__key__"] for s in samples]
    assert [b["jpg"] for b in back] == [s["jpg"] for b, s in zip(back, samples, strict=True)]
    assert [b["label"] for b in back] == [0, 1, 2]
    assert back[1]["meta"] == {
        "image_id": "train/c1/x.1",
        "label": 1,
        "class_name": "fox",
        "pass": 2,
        "seed": 8,
        "prompt": "p1",
        "negative_prompt": NEGATIVE,
    }
    assert back[0]["image"].size == (16, 16)


def test_write_shard_is_byte_deterministic_whatever_the_clock(tmp_path, monkeypatch):
    """webdataset stamps members with time.time() unless told otherwise."""
    import webdataset.writer

    for i, clock in enumerate((1_000_000_000.0, 2_000_000_000.0)):
        monkeypatch.setattr(webdataset.writer.time, "time", lambda clock=clock: clock)
        write_shard(fake_samples(3), tmp_path / f"{i}.tar")
    assert sha256(tmp_path / "0.tar") == sha256(tmp_path / "1.tar")
    with tarfile.open(tmp_path / "0.tar") as tar:
        assert {(m.mtime, m.uid, m.gid) for m in tar} == {(0, 0, 0)}


def test_cli_writes_a_plain_webdataset_shard_byte_identically_twice(data, tiny_zoo, tmp_path):
    import webdataset as wds

    args = ["--index", str(data / "index.parquet"), "--captions", str(data / "captions.parquet")]
    args += ["--class-means", str(data / "class_means.pt"), "--model", str(tiny_zoo / "sd"), "--pass", "1"]
    args += ["--shard", "0", "--shard-size", "4", "--steps", "4", "--resolution", "32", "--batch-size", "3"]
    main([*args, "--out", str(tmp_path / "a.tar")])
    main([*args, "--out", str(tmp_path / "b.tar")])
    assert sha256(tmp_path / "a.tar") == sha256(tmp_path / "b.tar")

    samples = list(wds.WebDataset(str(tmp_path / "a.tar"), shardshuffle=False).decode("pil"))
    index = pd.read_parquet(data / "index.parquet")
    assert [s["json"]["image_id"] for s in samples] == list(index["image_id"][:4])  # index order
    assert [int(s["cls"]) for s in samples] == TRAIN_LABELS[:4]
    assert all(s["jpg"].size == (32, 32) and s["jpg"].mode == "RGB" for s in samples)
    assert all(s["__key__"].endswith("__p1") for s in samples)


def test_overlapped_shard_is_byte_identical_to_the_serial_one(data, tiny_zoo, tmp_path):
    """Loader threads, the model's own thread and the encoding on the caller's thread change no byte:
    ``--host-threads 0`` is the serial job (load, generate, encode, write in turn, one thread).
    Batches of 3 over an index that is not label-sorted make the output wait for later batches."""
    args = ["--index", str(data / "index.parquet"), "--captions", str(data / "captions.parquet")]
    args += ["--class-means", str(data / "class_means.pt"), "--model", str(tiny_zoo / "sd")]
    args += ["--shard", "0", "--shard-size", "6", "--steps", "4", "--resolution", "32", "--batch-size", "3"]
    runs = {"serial": ["--host-threads", "0"], "default": [], "wide": ["--host-threads", "3"]}
    runs["shallow"] = ["--host-threads", "1", "--prefetch-batches", "1"]
    for name, extra in runs.items():
        main([*args, *extra, "--out", str(tmp_path / f"{name}.tar")])
    digests = {name: sha256(tmp_path / f"{name}.tar") for name in runs}
    assert set(digests.values()) == {digests["serial"]}, digests
    assert [s["meta"]["label"] for s in read_shard(tmp_path / "serial.tar")] == TRAIN_LABELS


def test_to_pil_rounds_like_the_pipelines_own_pil_output():
    from diffusers.image_processor import VaeImageProcessor

    images = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    images[0, 0, 0] = [0.0, 1.0, 0.5 / 255]  # the ends of the range and a rounding tie
    ours, theirs = to_pil(images), VaeImageProcessor.numpy_to_pil(images)
    assert [i.tobytes() for i in ours] == [i.tobytes() for i in theirs]
    assert {i.mode for i in ours} == {"RGB"}


def test_ahead_keeps_order_and_runs_at_most_depth_tasks_ahead():
    started: list[int] = []

    def task(i: int):
        started.append(i)
        time.sleep(0.001 * (5 - i % 5))  # later tasks finish first
        return i

    with ThreadPoolExecutor(3) as pool:
        results = ahead((lambda i=i: task(i) for i in range(12)), pool, depth=4)
        assert next(results) == 0
        time.sleep(0.05)
        assert max(started) <= 4  # task 0 consumed: tasks 1-4 submitted at most, nothing further
        assert [0, *results] == list(range(12))
    assert list(ahead((lambda i=i: i for i in range(3)), None, depth=4)) == [0, 1, 2]


def test_in_background_raises_the_producers_error_and_stops_it_when_the_consumer_stops():
    def failing():
        yield 1
        raise RuntimeError("model failed on batch 2")

    items = in_background(failing(), depth=2)
    assert next(items) == 1
    with pytest.raises(RuntimeError, match="batch 2"):
        next(items)

    made: list[int] = []

    def endless():
        for i in range(10_000):
            made.append(i)
            yield i

    items = in_background(endless(), depth=2)
    assert [next(items), next(items)] == [0, 1]
    items.close()
    assert len(made) <= 5  # two consumed, at most two queued and one being made when stopped
    assert not [t for t in threading.enumerate() if t.name == "synthesize-model"]


def test_a_model_error_mid_shard_leaves_no_shard(data, tmp_path):
    plan = plan_of(data, size=6)
    calls = []

    def model(batch, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("out of memory on batch 2")
        return np.full((len(batch), 32, 32, 3), 0.5, dtype=np.float32)

    jpegs = synthesize(model, plan, FAST, batch_size=2, jpeg_quality=90)
    samples = (make_sample(r, j, 0, NEGATIVE) for r, j in zip(plan.to_dict("records"), jpegs, strict=True))
    with pytest.raises(RuntimeError, match="batch 2"):
        write_shard(samples, tmp_path / "s.tar")
    assert calls == [2, 2] and list(tmp_path.iterdir()) == []  # no shard, no temporary left


def test_pixels_do_not_depend_on_batch_composition(pipe, data):
    """Per-sample generators make the noise batch-independent; batched float math (GEMMs blocked
    differently for batch 4 and 1) still differs by ~1e-6, which can flip a rounding to uint8."""
    plan = plan_of(data)
    together = generate(pipe, data, plan)
    alone = [generate(pipe, data, plan.iloc[[i]])[0] for i in range(len(plan))]
    for a, b in zip(together, alone, strict=True):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1
    assert np.abs(pixels(together[0]) - pixels(together[1])).max() > 1


def test_visual_guidance_changes_the_condition_and_the_images(pipe, data):
    plan = plan_of(data).iloc[:2]
    with_guidance = generate(pipe, data, plan)
    without = generate(pipe, data, plan, guidance=False)
    assert all(np.abs(pixels(a) - pixels(b)).max() > 1 for a, b in zip(with_guidance, without, strict=True))


def test_lora_at_half_scale_changes_images_and_zero_scale_does_not(tiny_zoo, lora_file, pipe, data):
    plan = plan_of(data).iloc[:2]
    lora_pipe = load_pipeline(str(tiny_zoo / "sd"), str(lora_file), "cpu")
    base = generate(pipe, data, plan)
    half = generate(lora_pipe, data, plan, SynthesisSettings(steps=4, resolution=32, lora_scale=0.5))
    off = generate(lora_pipe, data, plan, SynthesisSettings(steps=4, resolution=32, lora_scale=0.0))
    full = generate(lora_pipe, data, plan, SynthesisSettings(steps=4, resolution=32, lora_scale=1.0))
    for b, h, o, f in zip(base, half, off, full, strict=True):
        assert np.abs(pixels(b) - pixels(h)).max() > 1
        assert np.abs(pixels(h) - pixels(f)).max() > 1
        assert np.abs(pixels(b) - pixels(o)).max() <= 1


def test_txt2img_ablation_generates_at_resolution_without_the_real_image(tiny_zoo, pipe, data):
    plan = plan_of(data).iloc[:2]
    txt = generate(
        load_pipeline(str(tiny_zoo / "sd"), None, "cpu", txt2img=True),
        data,
        plan,
        SynthesisSettings(steps=4, resolution=32, txt2img=True),
    )
    img = generate(pipe, data, plan)
    assert [t.size for t in txt] == [(32, 32)] * 2
    assert np.abs(pixels(txt[0]) - pixels(img[0])).max() > 1


def test_captions_are_optional_only_with_no_caption(capsys):
    from realfake.synthesize import parse_args

    base = ["--index", "i", "--class-means", "m", "--model", "sd", "--out", "o.tar", "--shard", "0"]
    base += ["--shard-size", "4"]
    assert parse_args([*base, "--no-caption"]).captions is None
    assert parse_args([*base, "--captions", "c.parquet"]).captions == "c.parquet"
    with pytest.raises(SystemExit):
        parse_args(base)
    assert "--captions is required unless --no-caption" in capsys.readouterr().err
