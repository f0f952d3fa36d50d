"""Generate a tiny, deterministic ImageNet-style dataset of procedurally drawn objects.

Each class is one (colour, texture, shape) combination, e.g. "red striped circle". Every image
jitters position, scale, rotation, background, colour and noise, so a classifier has something to
learn but cannot read the class off a single pixel. Layout of ``--out``::

    train/<class_id>/<class_id>_<nnnn>.jpg   val/<class_id>/<class_id>_<nnnn>.jpg
    classes.tsv                              class_id<TAB>class_name, no header

Images depend only on (seed, class, split, number): two runs give byte-identical files.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image

from realfake import provenance
from realfake.io import atomic_path

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (150, 50, 190),
    "orange": (245, 140, 30),
    "cyan": (40, 210, 220),
}
TEXTURES = ("plain", "striped", "dotted", "checkered")
SHAPES = ("circle", "square", "triangle", "cross", "ring", "star")
#: Class ``i`` is (colour i mod 7, texture i mod 4, shape i mod 6): unique for i < lcm(7, 4, 6) and,
#: for i < 42, any two classes differ in colour or shape, not only in texture.
MAX_CLASSES = math.lcm(len(COLOURS), len(TEXTURES), len(SHAPES))
SPLIT_DIRS = ("train", "val")
JPEG_QUALITY = 95
SUPERSAMPLE = 2


def class_spec(index: int) -> tuple[str, str, str]:
    """(colour, texture, shape) of class ``index``; neighbouring classes differ in all three."""
    if not 0 <= index < MAX_CLASSES:
        raise ValueError(f"class index {index} out of range: at most {MAX_CLASSES} classes are supported")
    colours = list(COLOURS)
    return colours[index % len(colours)], TEXTURES[index % len(TEXTURES)], SHAPES[index % len(SHAPES)]


def class_table(num_classes: int) -> list[tuple[str, str]]:
    """[(class_id, class_name)] of the first ``num_classes`` classes, ids "t000", "t001", ..."""
    return [(f"t{i:03d}", " ".join(class_spec(i))) for i in range(num_classes)]


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` in local coordinates (object of radius ~1 centred at 0)."""
    r = np.hypot(u, v)
    if shape == "circle":
        return r <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":
        normals = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
        return np.all([u * nx + v * ny <= 0.5 for nx, ny in normals], axis=0)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "star":
        theta = np.arctan2(v, u)
        return r <= 0.45 + 0.6 * ((np.cos(5 * theta) + 1) / 2) ** 2
    # shapes of the pretraining corpus only (realfake.tinycorpus), never of a tiny class
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "hexagon":
        return np.all([u * math.cos(a) + v * math.sin(a) <= 0.85 for a in np.arange(6) * math.pi / 3], axis=0)
    if shape == "bar":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.4)
    raise ValueError(f"unknown shape {shape!r}")


def texture_mask(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the object shows its full colour (elsewhere it is darkened), in local coordinates."""
    freq = 2.5
    if texture == "plain":
        return np.ones_like(u, dtype=bool)
    if texture == "striped":
        return np.floor(u * freq) % 2 == 0
    if texture == "checkered":
        return (np.floor(u * freq) + np.floor(v * freq)) % 2 == 0
    if texture == "dotted":
        du, dv = (u * freq) % 1 - 0.5, (v * freq) % 1 - 0.5
        return np.hypot(du, dv) > 0.3
    raise ValueError(f"unknown texture {texture!r}")


def object_frame(size: int, rng: np.random.Generator, max_scale: float) -> tuple[np.ndarray, ...]:
    """Pixel grid and object coordinates of a ``size`` px image drawn at SUPERSAMPLE x: ``(x, y, u,
    v)``, where (u, v) are the object's local coordinates (random scale up to ``max_scale`` of the
    canvas, position and rotation). Shared by the tiny dataset and the pretraining corpus."""
    canvas = size * SUPERSAMPLE
    scale = rng.uniform(0.22, max_scale) * canvas
    centre = rng.uniform(scale, canvas - scale, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:canvas, 0:canvas].astype(np.float32) + 0.5
    dx, dy = (x - centre[0]) / scale, (y - centre[1]) / scale
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    return x, y, u, v


def paint_object(
    pixels: np.ndarray, rgb: tuple[int, int, int], texture: str, shape: str, u: np.ndarray, v: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    """``pixels`` with the object drawn: a jittered tint of ``rgb``, darkened off its texture."""
    tint = np.asarray(rgb, dtype=np.float32) + rng.uniform(-20, 20, size=3)
    shaded = np.where(texture_mask(texture, u, v)[..., None], tint, tint * 0.35)
    return np.where(shape_mask(shape, u, v)[..., None], shaded, pixels)


def render_image(spec: tuple[str, str, str], size: int, rng: np.random.Generator) -> Image.Image:
    """One jittered RGB image of the (colour, texture, shape) ``spec``, ``size`` x ``size`` px."""
    colour, texture, shape = spec
    canvas = size * SUPERSAMPLE
    x, _, u, v = object_frame(size, rng, 0.4)
    background = rng.uniform(50, 200) + rng.uniform(-25, 25, size=3)
    gradient = rng.uniform(-30, 30) * (x / canvas - 0.5)[..., None]
    pixels = np.broadcast_to(background, (canvas, canvas, 3)) + gradient
    pixels = paint_object(pixels, COLOURS[colour], texture, shape, u, v, rng)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((size, size), Image.BOX)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size=(size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def generate_dataset(
    out: Path, num_classes: int, train_per_class: int, test_per_class: int, image_size: int, seed: int
) -> None:
    """Write the dataset under ``out`` as one atomic directory (replacing any previous one)."""
    if num_classes < 1 or train_per_class < 1 or test_per_class < 0 or image_size < 8:
        raise ValueError(
            f"need num_classes >= 1, train_per_class >= 1, test_per_class >= 0, image_size >= 8; got "
            f"{num_classes}, {train_per_class}, {test_per_class}, {image_size}"
        )
    table = class_table(num_classes)
    with atomic_path(out, is_dir=True) as tmp:
        for label, (class_id, _) in enumerate(table):
            spec = class_spec(label)
            for split_index, count in enumerate((train_per_class, test_per_class)):
                folder = tmp / SPLIT_DIRS[split_index] / class_id
                folder.mkdir(parents=True)
                for number in range(count):
                    rng = np.random.default_rng([seed, label, split_index, number])
                    image = render_image(spec, image_size, rng)
                    image.save(folder / f"{class_id}_{number:04d}.jpg", quality=JPEG_QUALITY)
        (tmp / "classes.tsv").write_text("".join(f"{cid}\t{name}\n" for cid, name in table))


@provenance.stage()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset directory to create")
    parser.add_argument("--num-classes", type=int, default=10, help=f"number of classes (<= {MAX_CLASSES})")
    parser.add_argument("--train-per-class", type=int, default=30, help="train images per class")
    parser.add_argument("--test-per-class", type=int, default=10, help="val images per class")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="base seed of all jitter")
    args = parser.parse_args(argv)
    generate_dataset(
        args.out, args.num_classes, args.train_per_class, args.test_per_class, args.image_size, args.seed
    )


if __name__ == "__main__":
    main()
