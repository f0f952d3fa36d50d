"""Generate the tiny default's OOD test sets: four variants of its test split, named like the paper's.

Stand-ins with the layouts of the real sets (``realfake.ood`` reads both), so the OOD evaluation,
class masking included, runs end to end offline. Layout of ``--out``::

    imagenet-sketch/<class_id>/*.jpg   edge map of every test image (dark lines on white, grey)
    imagenet-r/<class_id>/*.jpg        posterised test images (2 bits per channel): a "rendition"
    imagenet-v2/<label>/*.jpg          freshly drawn images (new seed), folders named by the integer label
    imagenet-a/<class_id>/*.jpg        hard images (small, low-contrast, noisy) of every ``--hard-stride``-th
                                       class only: a class subset, as ImageNet-A's 200 of 1000

Kept apart from ``realfake.tinydata`` (whose drawing code it reuses) so that adding OOD sets does
not change the tiny dataset's code hash and re-run the whole tiny DAG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from realfake import provenance
from realfake.index import list_images, read_class_names
from realfake.io import atomic_path
from realfake.tinydata import JPEG_QUALITY, class_spec, render_image

POSTERIZE_BITS = 2
EDGE_GAIN = 6.0
SKETCH_BLUR = 1.0


def edge_sketch(image: Image.Image) -> Image.Image:
    """A grey "sketch": inverted edge magnitude of the blurred luminance (dark lines on white), as RGB;
    the blur keeps the pixel noise of the tiny images from drawing lines of its own."""
    smooth = image.convert("L").filter(ImageFilter.GaussianBlur(SKETCH_BLUR))
    edges = np.array(smooth.filter(ImageFilter.FIND_EDGES), dtype=np.float32)
    edges[[0, -1], :] = edges[:, [0, -1]] = 0  # PIL's kernel marks the image border as an edge
    sketch = 255.0 - np.clip(edges * EDGE_GAIN, 0, 255)
    return Image.fromarray(sketch.astype(np.uint8)).convert("RGB")


def rendition(image: Image.Image) -> Image.Image:
    """A flat-colour "rendition": every channel posterised to ``POSTERIZE_BITS`` bits."""
    return ImageOps.posterize(image.convert("RGB"), POSTERIZE_BITS)


def hard_image(spec: tuple[str, str, str], size: int, rng: np.random.Generator) -> Image.Image:
    """A hard example: the object drawn at double size and shrunk to half, low contrast, heavy noise."""
    small = render_image(spec, size, rng).resize((size // 2, size // 2), Image.BOX)
    canvas = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(60, 190, size=3)))
    offset = rng.integers(0, size - size // 2 + 1, size=2)
    canvas.paste(small, (int(offset[0]), int(offset[1])))
    pixels = np.asarray(canvas, dtype=np.float32)
    pixels = pixels.mean() + 0.5 * (pixels - pixels.mean()) + rng.normal(0, 20, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def hard_classes(num_classes: int, stride: int) -> list[int]:
    """Labels of the hard subset: every ``stride``-th class, starting at 0."""
    if stride < 1:
        raise ValueError(f"hard stride must be >= 1, got {stride}")
    return list(range(0, num_classes, stride))


def generate_ood(data: Path, out: Path, per_class: int, image_size: int, seed: int, hard_stride: int) -> None:
    """Write the four sets under ``out`` (one atomic directory) from the tiny dataset at ``data``."""
    class_ids = list(read_class_names(data / "classes.tsv"))
    with atomic_path(out, is_dir=True) as tmp:
        for label, class_id in enumerate(class_ids):
            for path in list_images(data / "val" / class_id):
                with Image.open(path) as image:
                    image = image.convert("RGB")
                for name, transform in (("imagenet-sketch", edge_sketch), ("imagenet-r", rendition)):
                    (tmp / name / class_id).mkdir(parents=True, exist_ok=True)
                    transform(image).save(tmp / name / class_id / path.name, quality=JPEG_QUALITY)
            v2_dir, hard = (
                tmp / "imagenet-v2" / str(label),
                label in hard_classes(len(class_ids), hard_stride),
            )
            v2_dir.mkdir(parents=True)
            if hard:
                (tmp / "imagenet-a" / class_id).mkdir(parents=True)
            for number in range(per_class):
                rng = np.random.default_rng([seed, label, number])
                render_image(class_spec(label), image_size, rng).save(
                    v2_dir / f"{number:04d}.jpg", quality=JPEG_QUALITY
                )
                if hard:
                    image = hard_image(class_spec(label), image_size, rng)
                    image.save(
                        tmp / "imagenet-a" / class_id / f"{class_id}_{number:04d}.jpg", quality=JPEG_QUALITY
                    )


@provenance.stage(inputs=("data",))
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m realfake.tinyood", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="the tiny dataset (realfake.tinydata --out)")
    parser.add_argument("--out", required=True, type=Path, help="directory of the four OOD sets to create")
    parser.add_argument("--per-class", type=int, default=10, help="fresh images per class (v2, hard subset)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the fresh images in pixels")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fresh images (not the dataset's)")
    parser.add_argument("--hard-stride", type=int, default=2, help="hard subset: every n-th class")
    args = parser.parse_args(argv)
    generate_ood(args.data, args.out, args.per_class, args.image_size, args.seed, args.hard_stride)


if __name__ == "__main__":
    main()
