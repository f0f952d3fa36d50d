"""Generate the tiny world's pretraining corpus: captioned images that are *not* the tiny dataset.

The corpus plays the role the web (LAION) plays for Stable Diffusion 1.5, CLIP and BLIP-2: the tiny
zoo is pretrained on it (:mod:`realfake.pretrain`) before any tiny target sees a target image. Each
image is one object drawn with :mod:`realfake.tinydata`'s renderer from a wider vocabulary than the
tiny classes (13 colours, 4 textures, 9 shapes) on a background of its own style (vertical
gradient, any tone), with a caption that says what is drawn ("a red striped ring on a dark
background"). Every (colour, texture, shape) combination that is a tiny class is **held out**, so
the corpus teaches the attributes but never a target class itself: fine-tuning (LoRA + MMD + visual
guidance) has a composition and a style to adapt to. A quarter of the images carry one defect
(blurred, cropped out of frame, distorted, unrealistic colours) named at the end of their caption,
as the web's bad photos are: that is what gives SD's negative prompt its meaning (:data:`DEFECTS`).

Layout of ``--out``::

    corpus-00000.tar   webdataset shard: <key>.png (RGB, --image-size px) + <key>.txt (caption)
    captions.parquet   key, caption, canonical, colour, texture, shape (one row per image, shard order)

Images depend only on (seed, number): two runs give byte-identical files.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from realfake import provenance
from realfake.io import atomic_path
from realfake.tinydata import (
    COLOURS,
    MAX_CLASSES,
    SHAPES,
    SUPERSAMPLE,
    TEXTURES,
    class_spec,
    object_frame,
    paint_object,
)

CORPUS_COLOURS: dict[str, tuple[int, int, int]] = {
    **COLOURS,
    "pink": (240, 130, 180),
    "brown": (130, 80, 40),
    "white": (240, 240, 240),
    "lime": (150, 220, 40),
    "navy": (30, 40, 130),
    "teal": (20, 130, 130),
}
CORPUS_SHAPES = (*SHAPES, "diamond", "hexagon", "bar")
CORPUS_TEXTURES = TEXTURES
#: Every tiny class (whatever ``tiny.num_classes``) is held out of the corpus.
HELD_OUT = frozenset(class_spec(i) for i in range(MAX_CLASSES))
COMBINATIONS = tuple(
    (c, t, s)
    for c in CORPUS_COLOURS
    for t in CORPUS_TEXTURES
    for s in CORPUS_SHAPES
    if (c, t, s) not in HELD_OUT
)
#: Caption templates (web captions vary in form); {b} is the background's tone. The first is also
#: every image's "dense" caption (``canonical`` column): what the captioner learns to say, as BLIP-2
#: learns one captioning style (COCO's) on top of web pairs.
TEMPLATES = (
    "a {c} {t} {s} on a {b} background",
    "photo of a {c} {t} {s}",
    "{c} {t} {s}",
    "a picture of a {t} {c} {s}",
    "a {s}, {c} and {t}, on a {b} background",
)
#: The web's bad photos: a share of the corpus carries one defect, and its caption says so in the
#: words of SD's negative prompts ("blurry", "cropped", ...), as LAION's captions do. Without them the
#: negative prompt's words mean nothing to the tiny text encoder and UNet, and classifier-free
#: guidance extrapolates away from an arbitrary embedding (measured 2026-12-02: with the paper's
#: negative prompt the tiny x1 classifier reached 51.0 % top-1, with an empty one 56.3 %, 3 seeds).
DEFECT_SHARE = 0.25
DEFECTS = ("blurry", "cropped", "out of frame", "distorted", "deformed", "unrealistic")
SHARD = "corpus-00000.tar"
CAPTIONS = "captions.parquet"


def background_word(tone: float) -> str:
    """The caption's word for a background of grey level ``tone`` (0-255)."""
    return "dark" if tone < 100 else "light" if tone > 160 else "gray"


def render_corpus_image(
    spec: tuple[str, str, str], size: int, rng: np.random.Generator
) -> tuple[Image.Image, str]:
    """One corpus image of ``spec`` = (colour, texture, shape) and its background word.

    Unlike the tiny dataset (horizontal gradient, mid greys, noise sigma 6), the corpus style has a
    vertical gradient, tones from dark to light with stronger tints, and noise sigma 4."""
    colour, texture, shape = spec
    canvas = size * SUPERSAMPLE
    _, y, u, v = object_frame(size, rng, 0.42)
    tone = rng.uniform(30, 225)
    background = tone + rng.uniform(-40, 40, size=3)
    gradient = rng.uniform(-30, 30) * (y / canvas - 0.5)[..., None]
    pixels = np.broadcast_to(background, (canvas, canvas, 3)) + gradient
    pixels = paint_object(pixels, CORPUS_COLOURS[colour], texture, shape, u, v, rng)
    small = pixels.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    small = small + rng.normal(0, 4, size=small.shape)
    return Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)), background_word(tone)


def degrade(image: Image.Image, defect: str, rng: np.random.Generator) -> Image.Image:
    """``image`` with ``defect`` (one of :data:`DEFECTS`): blurred; zoomed into a corner so the
    object leaves the frame; its rows shifted along a wave (distorted, deformed); or its colour
    channels permuted (unrealistic)."""
    size = image.width
    if defect == "blurry":
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 1.8) * size / 32))
    if defect in ("cropped", "out of frame"):
        side = int(round(size * rng.uniform(0.5, 0.65)))
        left, top = (int(rng.integers(2)) * (size - side) for _ in range(2))
        return image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    pixels = np.asarray(image)
    if defect in ("distorted", "deformed"):
        amplitude, period = rng.uniform(0.08, 0.14) * size, rng.uniform(0.3, 0.6) * size
        wave = np.sin(2 * np.pi * np.arange(size) / period + rng.uniform(0, 2 * np.pi))
        shifts = np.round(amplitude * wave).astype(int)
        rows = [np.roll(row, k, axis=0) for row, k in zip(pixels, shifts, strict=True)]
        return Image.fromarray(np.stack(rows))
    if defect == "unrealistic":
        order = ((1, 2, 0), (2, 0, 1))[int(rng.integers(2))]
        return Image.fromarray(np.ascontiguousarray(pixels[..., order]))
    raise ValueError(f"unknown defect {defect!r}: one of {DEFECTS}")


def corpus_item(number: int, size: int, seed: int) -> tuple[Image.Image, dict[str, str]]:
    """Image ``number`` of the corpus and its row (key, caption, canonical, colour, texture, shape,
    defect): a :data:`DEFECT_SHARE` of images carry a defect, named at the end of the caption (the
    canonical caption, what the captioner learns, describes the object only)."""
    rng = np.random.default_rng([seed, number])
    colour, texture, shape = COMBINATIONS[rng.integers(len(COMBINATIONS))]
    image, tone = render_corpus_image((colour, texture, shape), size, rng)
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    caption = template.format(c=colour, t=texture, s=shape, b=tone)
    canonical = TEMPLATES[0].format(c=colour, t=texture, s=shape, b=tone)
    defect = DEFECTS[rng.integers(len(DEFECTS))] if rng.random() < DEFECT_SHARE else ""
    if defect:
        image, caption = degrade(image, defect, rng), f"{caption}, {defect}"
    row = {"key": f"{number:06d}", "caption": caption, "canonical": canonical}
    return image, row | {"colour": colour, "texture": texture, "shape": shape, "defect": defect}


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def generate_corpus(out: Path, num_images: int, image_size: int, seed: int) -> None:
    """Write the corpus under ``out`` as one atomic directory (replacing any previous one)."""
    import pandas as pd
    import webdataset as wds

    if num_images < 1 or image_size < 8:
        raise ValueError(f"need num_images >= 1 and image_size >= 8, got {num_images}, {image_size}")
    rows = []
    with atomic_path(out, is_dir=True) as tmp:
        with (
            open(tmp / SHARD, "wb") as fh,
            wds.TarWriter(fh, user="realfake", group="realfake", mode=0o444, mtime=0, encoder=False) as sink,
        ):
            for number in range(num_images):
                image, row = corpus_item(number, image_size, seed)
                sink.write({"__key__": row["key"], "png": png_bytes(image), "txt": row["caption"].encode()})
                rows.append(row)
        pd.DataFrame(rows).to_parquet(tmp / CAPTIONS, index=False)


def canonical_captions(root: str | Path) -> list[str]:
    """The canonical caption of every corpus image at ``root``, in shard (key) order."""
    import pandas as pd

    table = pd.read_parquet(Path(root) / CAPTIONS).sort_values("key")
    return table["canonical"].tolist()


def load_corpus(root: str | Path) -> tuple[np.ndarray, list[str]]:
    """(images ``[N, H, W, 3]`` uint8, captions) of the corpus at ``root``, in shard order."""
    from realfake.io import open_tar

    images, captions = {}, {}
    with open_tar(Path(root) / SHARD) as tar:
        for member in tar:
            key, _, ext = member.name.rpartition(".")
            data = tar.extractfile(member).read()
            if ext == "png":
                images[key] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            elif ext == "txt":
                captions[key] = data.decode()
    keys = sorted(images)
    if not keys or set(keys) != set(captions):
        raise ValueError(f"{root}/{SHARD}: every sample needs a png and a txt member")
    return np.stack([images[k] for k in keys]), [captions[k] for k in keys]


def vocabulary() -> list[str]:
    """Every word a corpus caption can contain, sorted (the tiny captioner's vocabulary)."""
    words = set()
    for template in TEMPLATES:
        for b in ("dark", "light", "gray"):
            for c in CORPUS_COLOURS:
                text = template.format(c=c, t=" ".join(CORPUS_TEXTURES), s=" ".join(CORPUS_SHAPES), b=b)
                words.update(text.replace(",", " ").split())
    words.update(" ".join(DEFECTS).split())
    return sorted(words)


@provenance.stage()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="corpus directory to create")
    parser.add_argument("--num-images", type=int, default=4000, help="images in the corpus")
    parser.add_argument("--image-size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="base seed of all drawing")
    args = parser.parse_args(argv)
    generate_corpus(args.out, args.num_images, args.image_size, args.seed)


if __name__ == "__main__":
    main()
