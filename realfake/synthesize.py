"""Synthesize one shard of training images with (LoRA-tuned) Stable Diffusion (paper Sec. 3.2-3.3, App. E).

Each source row of the shard gives one synthetic image: img2img from the VAE latent of the real
image (the latent prior, strength 0.75), UniPC, classifier-free guidance 2.0, conditioned on
"photo of [class], [caption]" with the class-mean CLIP image embedding as the last text token.
Every sample has its own generator seeded from (image_id, pass, base seed), so its pixels do not
depend on batch or shard composition; the tar is byte-deterministic (fixed member metadata).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from realfake import provenance
from realfake.conditioning import (
    GUIDANCE_SOURCES,
    ImageEmbeddings,
    encode_condition,
    format_prompt,
    select_guidance,
)
from realfake.embed import load_guidance, load_image_guidance
from realfake.io import atomic_path, open_tar, safetensors_metadata, set_offline
from realfake.models import load_sd_pipeline, resolve_device
from realfake.shards import sample_seed, shard_rows

DEFAULT_PROMPT = "photo of {class_name}, {caption}"
DEFAULT_NEGATIVE = "distorted, unrealistic, blurry, out of frame"  # App. E, used for every generation
LORA_ADAPTER = "realfake"
#: Where the visual-guidance token enters classifier-free guidance (:func:`condition_embeds`).
GUIDANCE_BRANCHES = ("positive", "both")
T = TypeVar("T")
#: The model step of a shard: (batch of plan rows, its source images or None for txt2img) ->
#: float images ``[B, H, W, 3]`` in [0, 1] (:func:`pipeline_model`; a benchmark substitutes its own).
BatchModel = Callable[[pd.DataFrame, "list[Image.Image] | None"], np.ndarray]


@dataclass
class SynthesisSettings:
    """Sampler hyper-parameters (App. E, Tab. 6); ``txt2img`` drops the latent prior (ablation)."""

    steps: int = 30
    guidance_scale: float = 2.0
    strength: float = 0.75
    lora_scale: float = 0.5
    resolution: int = 512
    txt2img: bool = False
    guidance_branches: str = "positive"
    prior_fit: str = "squash"


def sample_key(image_id: str, synth_pass: int) -> str:
    """Webdataset key of a synthetic sample: no "." in it, because webdataset splits a member
    name at its first dot (``a.p0.jpg`` would yield a field ``p0.jpg`` instead of ``jpg``)."""
    return f"{image_id.replace('/', '__').replace('.', '_')}__p{synth_pass}"


def shard_plan(
    index: pd.DataFrame,
    captions: pd.DataFrame | None,
    shard: int,
    shard_size: int,
    synth_pass: int,
    base_seed: int,
    template: str,
    use_caption: bool = True,
    source: str | Path = "captions",
) -> pd.DataFrame:
    """The shard's train rows (index order) with ``caption``, ``prompt``, ``seed`` and ``key``.

    A row without a caption is an error naming the captions' ``source`` when captions are used: a
    silently empty caption would change the condition of that sample without anyone noticing.
    """
    rows = shard_rows(index, "train", shard, shard_size).reset_index(drop=True)
    if use_caption:
        lookup = captions.set_index("image_id")["caption"]
        missing = ~rows["image_id"].isin(lookup.index)
        if missing.any():
            first = rows["image_id"][missing].iloc[0]
            raise ValueError(f"{source}: {missing.sum()} shard rows have no caption, e.g. {first!r}")
        caption = rows["image_id"].map(lookup).fillna("").astype(str)
    else:
        caption = pd.Series([""] * len(rows), dtype=str)
    return rows.assign(
        caption=caption,
        prompt=[format_prompt(template, n, c) for n, c in zip(rows["class_name"], caption, strict=True)],
        seed=[sample_seed(i, synth_pass, base_seed) for i in rows["image_id"]],
        key=[sample_key(i, synth_pass) for i in rows["image_id"]],
    )


def class_batches(plan: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Chunks of ``batch_size`` rows after a stable sort by label, so a batch mostly shares one class."""
    ordered = plan.sort_values("label", kind="stable")
    return [ordered.iloc[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


#: How a source image becomes the square latent prior (docs/fidelity.md): ``squash`` resizes the
#: whole image to the square (the official code's ``.resize((512, 512))``: full field of view,
#: aspect not kept); ``crop`` resizes the shorter side and centre-crops (aspect kept, edges lost).
PRIOR_FITS = ("squash", "crop")


def load_image(path: str | Path, resolution: int, fit: str = "squash") -> Image.Image:
    """RGB ``resolution`` x ``resolution`` image of ``path`` for the latent prior (:data:`PRIOR_FITS`)."""
    if fit not in PRIOR_FITS:
        raise ValueError(f"prior fit {fit!r}: expected one of {PRIOR_FITS}")
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        if fit == "crop":
            return ImageOps.fit(rgb, (resolution, resolution), Image.Resampling.BICUBIC)
        return rgb.resize((resolution, resolution), Image.Resampling.BICUBIC)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """JPEG bytes at ``quality``: encoded here because webdataset writers would re-encode at 100."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def generators(seeds: Iterable[int]) -> list[torch.Generator]:
    """One CPU generator per sample: noise independent of batch composition and of the device."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def condition_embeds(
    pipe,
    prompts: list[str],
    guidance: torch.Tensor | None,
    negative_prompt: str,
    branches: str = "positive",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, negative_prompt_embeds); the guidance token only enters via the embeds,
    since diffusers pipelines silently swallow unknown keyword arguments.

    ``branches`` (:data:`GUIDANCE_BRANCHES`) says where the token goes: ``positive`` only (CFG
    then amplifies it by the guidance scale), or ``both`` (the negative prompt's last token too,
    so CFG amplifies the text only). The paper does not say; the authors' pipeline is unreleased.
    """
    if branches not in GUIDANCE_BRANCHES:
        raise ValueError(f"guidance branches {branches!r}: expected one of {GUIDANCE_BRANCHES}")
    with torch.inference_mode():
        if guidance is not None:
            guidance = guidance.to(pipe.text_encoder.device)
        positive = encode_condition(pipe.tokenizer, pipe.text_encoder, prompts, guidance)
        negative = encode_condition(
            pipe.tokenizer,
            pipe.text_encoder,
            [negative_prompt] * len(prompts),
            guidance if branches == "both" else None,
        )
    return positive, negative


def generate_batch(
    pipe,
    images: list[Image.Image] | None,
    prompt_embeds: torch.Tensor,
    negative_embeds: torch.Tensor,
    gens: list[torch.Generator],
    settings: SynthesisSettings,
    output_type: str = "pil",
) -> list[Image.Image] | np.ndarray:
    """One pipeline call for the whole batch: img2img from ``images``, or txt2img when ``None``.

    ``output_type="np"`` returns the float images ``[B, H, W, 3]`` the pipeline would turn into PIL
    images (:func:`to_pil` does that later, off the model's thread, to the same pixels)."""
    common = dict(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_embeds,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        generator=gens,
        cross_attention_kwargs={"scale": settings.lora_scale},
        output_type=output_type,
    )
    with torch.inference_mode():
        if images is None:
            out = pipe(height=settings.resolution, width=settings.resolution, **common)
        else:
            out = pipe(image=images, strength=settings.strength, **common)
    return out.images


def make_sample(row: dict | pd.Series, jpeg: bytes, synth_pass: int, negative_prompt: str) -> dict:
    """A webdataset sample (``jpg``, ``cls``, ``json`` members) per docs/stages.md."""
    meta = {
        "image_id": row["image_id"],
        "label": int(row["label"]),
        "class_name": row["class_name"],
        "pass": synth_pass,
        "seed": int(row["seed"]),
        "prompt": row["prompt"],
        "negative_prompt": negative_prompt,
    }
    text = {"cls": str(meta["label"]), "json": json.dumps(meta, sort_keys=True)}
    return {"__key__": row["key"], "jpg": jpeg, **{k: v.encode() for k, v in text.items()}}


def write_shard(samples: Iterable[dict], path: str | Path) -> None:
    """Write samples as a webdataset tar, atomically and byte-deterministically.

    TarWriter stamps each member with the current time unless ``mtime`` is given; user, group
    and mode are fixed too, so identical samples always give an identical file.
    """
    import webdataset as wds

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        with wds.TarWriter(fh, user="realfake", group="realfake", mode=0o444, mtime=0, encoder=False) as sink:
            for sample in samples:
                sink.write(sample)


def read_shard(path: str | Path) -> Iterator[dict]:
    """Yield ``{"key", "jpg", "image", "label", "meta"}`` per sample of a synthetic shard, in order."""
    with open_tar(path) as tar:
        current: dict = {}
        for member in tar:
            key, _, ext = member.name.rpartition(".")  # last dot: also reads keys like "<id>.p0"
            if current and current["key"] != key:
                yield _decode(current)
                current = {}
            current["key"] = key
            current[ext] = tar.extractfile(member).read()
        if current:
            yield _decode(current)


def _decode(raw: dict) -> dict:
    image = Image.open(io.BytesIO(raw["jpg"]))
    image.load()
    meta = json.loads(raw["json"])
    return {"key": raw["key"], "jpg": raw["jpg"], "image": image, "label": int(raw["cls"]), "meta": meta}


def load_pipeline(model: str, lora: str | None, device: str, txt2img: bool = False):
    """The SD pipeline for synthesis: fp16, channels-last UNet and TF32 on CUDA; fp32 on CPU."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    pipe = load_sd_pipeline(model, device=device, dtype=torch.float16 if cuda else torch.float32)
    if lora:
        lora_path = Path(lora)  # peft/diffusers want folder + weight_name for a local file
        pipe.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name, adapter_name=LORA_ADAPTER)
    if cuda:
        pipe.unet.to(memory_format=torch.channels_last)
    if txt2img:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(**pipe.components, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
    return pipe


def to_pil(images: np.ndarray) -> list[Image.Image]:
    """RGB images of float ``[B, H, W, 3]`` in [0, 1], rounded to uint8 as diffusers'
    ``VaeImageProcessor.numpy_to_pil`` does for ``output_type="pil"`` (the same pixels, tested)."""
    return [Image.fromarray(a) for a in (images * 255).round().astype("uint8")]


def pipeline_model(
    pipe,
    class_means: torch.Tensor | ImageEmbeddings | None,
    settings: SynthesisSettings,
    negative_prompt: str,
) -> BatchModel:
    """The :data:`BatchModel` of a loaded pipeline: guidance, prompt embeddings and one pipeline call."""

    def run(batch: pd.DataFrame, images: list[Image.Image] | None) -> np.ndarray:
        guidance = select_guidance(class_means, batch["label"].tolist(), batch["image_id"].tolist())
        positive, negative = condition_embeds(
            pipe, list(batch["prompt"]), guidance, negative_prompt, settings.guidance_branches
        )
        gens = generators(batch["seed"])
        return generate_batch(pipe, images, positive, negative, gens, settings, output_type="np")

    return run


def ahead(tasks: Iterable[Callable[[], T]], pool: Executor | None, depth: int) -> Iterator[T]:
    """The results of ``tasks`` in order, each started in ``pool`` up to ``depth`` tasks before it
    is needed (bounded prefetch: memory stays ``depth`` results); ``pool=None`` runs each in turn."""
    if pool is None:
        yield from (task() for task in tasks)
        return
    todo = iter(tasks)
    pending = deque(pool.submit(task) for task in islice(todo, max(depth, 1)))
    while pending:
        result = pending.popleft().result()
        pending.extend(pool.submit(task) for task in islice(todo, 1))
        yield result


def source_batches(
    batches: Sequence[pd.DataFrame], settings: SynthesisSettings, pool: Executor | None, depth: int
) -> Iterator[list[Image.Image] | None]:
    """Each batch's source images (the latent prior), decoded and fitted in ``pool`` up to ``depth``
    images ahead of the model; ``None`` per batch for txt2img."""
    if settings.txt2img:
        yield from (None for _ in batches)
        return
    load = partial(load_image, resolution=settings.resolution, fit=settings.prior_fit)
    images = ahead((partial(load, p) for b in batches for p in b["path"]), pool, depth)
    for batch in batches:
        yield list(islice(images, len(batch)))


_END = object()


def in_background(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items`` produced by a thread of their own, at most ``depth`` ahead of the consumer.

    An error of the producer is raised here, in the consumer; a consumer that stops (error,
    ``close()``) stops the producer after the item it is making. The producer's thread is the one
    that runs ``items``' code (in synthesis: the model), this one does whatever consumes them.
    """
    channel: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def send(message: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                channel.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not send((True, item)):
                    return
            send((True, _END))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            send((False, err))

    thread = threading.Thread(target=produce, name="synthesize-model", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = channel.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def synthesize(
    model: BatchModel,
    plan: pd.DataFrame,
    settings: SynthesisSettings,
    batch_size: int,
    jpeg_quality: int,
    host_threads: int = 2,
    prefetch_batches: int = 2,
) -> Iterator[bytes]:
    """JPEG bytes of every plan row in plan order, generated in class-sorted batches and yielded as
    soon as the rows before them are done (at once for a label-sorted index), so a shard streams to
    disk instead of piling up in memory.

    With ``host_threads`` > 0 the model does not wait for the host: ``host_threads`` threads decode
    and fit the source images up to ``prefetch_batches`` batches ahead and JPEG-encode the results,
    the model runs in a thread of its own (:func:`in_background`, ``prefetch_batches`` outputs
    ahead), and the caller's thread converts and writes. ``0`` does all of it in turn on the
    caller's thread (the serial reference). The bytes are the same either way: the per-sample seeds,
    the batches and the order do not depend on the threads.
    """
    if host_threads < 0 or prefetch_batches < 1:
        raise ValueError(
            f"host_threads {host_threads} must be >= 0 and prefetch_batches {prefetch_batches} >= 1"
        )
    batches = class_batches(plan, batch_size)
    pool = ThreadPoolExecutor(host_threads, "synthesize-host") if host_threads > 0 else None
    sources = source_batches(batches, settings, pool, prefetch_batches * batch_size)
    steps = tqdm(zip(batches, sources, strict=True), total=len(batches), desc="synthesize", unit="batch")
    outputs = ((batch.index, model(batch, images)) for batch, images in steps)
    if pool is not None:
        outputs = in_background(outputs, prefetch_batches)
    done: dict[int, bytes] = {}
    order, cursor = list(plan.index), 0
    try:
        encode = partial(encode_jpeg, quality=jpeg_quality)
        for positions, images in outputs:
            jpegs = map(encode, to_pil(images)) if pool is None else pool.map(encode, to_pil(images))
            done.update(zip(positions, jpegs, strict=True))
            while cursor < len(order) and order[cursor] in done:
                yield done.pop(order[cursor])
                cursor += 1
    finally:
        outputs.close()  # stops the model's thread before the loaders it reads from
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag in ("--index", "--class-means", "--model", "--out"):
        p.add_argument(flag, required=True)
    p.add_argument("--captions", help="captions.parquet; not read with --no-caption")
    p.add_argument("--lora", default=None, help="diffusers-format LoRA .safetensors")
    p.add_argument("--pass", dest="synth_pass", type=int, default=0, help="synthesis pass (seeds differ)")
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--shard-size", type=int, required=True)
    d = SynthesisSettings()
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--guidance-scale", type=float, default=d.guidance_scale)
    p.add_argument("--strength", type=float, default=d.strength, help="img2img strength (latent prior)")
    p.add_argument("--lora-scale", type=float, default=d.lora_scale)
    p.add_argument("--resolution", type=int, default=d.resolution)
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="template with {class_name}, {caption}")
    p.add_argument("--negative-prompt", default=DEFAULT_NEGATIVE)
    p.add_argument("--no-visual-guidance", action="store_true")
    p.add_argument("--guidance-source", choices=GUIDANCE_SOURCES, default="class_mean",
                   help="class_mean (paper) or image: the source image's embedding")  # fmt: skip
    p.add_argument("--prior-fit", choices=PRIOR_FITS, default=d.prior_fit,
                   help="source image to square: squash (official code) or crop (centre)")  # fmt: skip
    p.add_argument("--guidance-branches", choices=GUIDANCE_BRANCHES, default=d.guidance_branches,
                   help="CFG branches that carry the guidance token: positive, or both")  # fmt: skip
    p.add_argument("--image-embeddings", nargs="+", help="embedding shards, for --guidance-source image")
    p.add_argument("--no-caption", action="store_true")
    p.add_argument("--txt2img", action="store_true", help="ablation: Gaussian prior, full --steps")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--host-threads", type=int, default=2,
                   help="threads that load sources ahead and encode; 0 = serial (same bytes)")  # fmt: skip
    p.add_argument("--prefetch-batches", type=int, default=2, help="batches loaded / generated ahead")
    p.add_argument("--seed", type=int, default=0, help="base seed of sample_seed")
    p.add_argument("--device", default="auto", help="torch device; auto = cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: as set by caller)")
    args = p.parse_args(argv)
    if not args.no_caption and not args.captions:
        p.error("--captions is required unless --no-caption")
    if args.guidance_source == "image" and not args.no_visual_guidance and not args.image_embeddings:
        p.error("--guidance-source image needs --image-embeddings")
    return args


@provenance.stage(inputs=("index", "captions", "class_means", "image_embeddings", "model", "lora"))
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_offline()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = SynthesisSettings(
        args.steps,
        args.guidance_scale,
        args.strength,
        args.lora_scale,
        args.resolution,
        args.txt2img,
        args.guidance_branches,
        args.prior_fit,
    )
    index = pd.read_parquet(args.index)
    captions = None if args.no_caption else pd.read_parquet(args.captions)
    where = (args.shard, args.shard_size, args.synth_pass, args.seed)
    plan = shard_plan(
        index, captions, *where, template=args.prompt, use_caption=not args.no_caption, source=args.captions
    )
    if args.no_visual_guidance:
        means = None
    elif args.guidance_source == "image":
        means = load_image_guidance(args.image_embeddings, args.model)
    else:
        means = load_guidance(args.class_means, args.model)
    if args.lora:
        safetensors_metadata(args.lora, "LoRA")  # a pickle or cut file is refused before the model loads
    pipe = load_pipeline(args.model, args.lora, resolve_device(args.device), args.txt2img)
    start = time.perf_counter()
    model = pipeline_model(pipe, means, settings, args.negative_prompt)
    jpegs = synthesize(
        model, plan, settings, args.batch_size, args.jpeg_quality, args.host_threads, args.prefetch_batches
    )
    records = plan.to_dict("records")  # plan order = index order of the shard's source rows
    # closed on any error of the writer (a full disk): its model and host threads stop and join
    # here, not at interpreter exit, where a thread still inside torch aborts the process (SIGABRT)
    with contextlib.closing(jpegs):
        samples = zip(records, jpegs, strict=True)
        write_shard((make_sample(r, j, args.synth_pass, args.negative_prompt) for r, j in samples), args.out)
    elapsed = time.perf_counter() - start
    print(f"synthesized {len(plan)} images in {elapsed:.1f} s ({len(plan) / elapsed:.2f} images/s)")


if __name__ == "__main__":
    main()
