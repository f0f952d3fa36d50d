"""realfake.sscd: top-k cosine neighbours and the similarity summary on constructed vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from realfake import sscd

# references at 0, 30, 60 and 90 degrees in the plane (one scaled: cosine ignores length)
ANGLES = [0, 30, 60, 90]
REFERENCES = torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in ANGLES])
REFERENCES[2] *= 7


def test_topk_cosine_hand_computed():
    queries = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # 0, 90 and 45 degrees
    sims, indices = sscd.topk_cosine(queries, REFERENCES, k=2)
    cos30, cos15 = math.cos(math.radians(30)), math.cos(math.radians(15))
    assert indices[0].tolist() == [0, 1] and indices[1].tolist() == [3, 2]
    assert sorted(indices[2].tolist()) == [1, 2]  # 30 and 60 degrees are both 15 from 45
    torch.testing.assert_close(sims, torch.tensor([[1.0, cos30], [1.0, cos30], [cos15, cos15]]))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 1000])
def test_topk_cosine_chunking_changes_nothing(chunk_size):
    generator = torch.Generator().manual_seed(0)
    queries, references = torch.randn(7, 4, generator=generator), torch.randn(11, 4, generator=generator)
    sims, indices = sscd.topk_cosine(queries, references, k=5, chunk_size=chunk_size)
    full = sscd.l2_normalize(queries) @ sscd.l2_normalize(references).T
    expected_sims, expected_indices = full.topk(5)
    torch.testing.assert_close(sims, expected_sims)
    assert torch.equal(indices, expected_indices)


def test_topk_cosine_refuses_k_above_references():
    with pytest.raises(ValueError, match="exceeds"):
        sscd.topk_cosine(torch.ones(1, 2), REFERENCES, k=5)


def test_similarity_summary_hand_computed():
    top1 = np.array([0.1, 0.2, 0.3, 0.6, 0.8])
    summary = sscd.similarity_summary(top1, threshold=0.5, percentiles=(50, 95))
    assert summary["mean"] == pytest.approx(0.4)
    assert summary["percentiles"] == {"50": pytest.approx(0.3), "95": pytest.approx(0.76)}  # 0.6 + 0.8*0.2
    assert summary["sim95"] == pytest.approx(0.76)
    assert summary["share_above_threshold"] == pytest.approx(0.4)
    assert summary["count"] == 5


def test_summary_threshold_is_strict_and_counted():
    summary = sscd.similarity_summary(np.array([0.5, 0.51, 0.2, 0.9]), threshold=0.5, percentiles=(50,))
    assert summary["count_above_threshold"] == 2  # 0.5 itself is not above
    assert summary["share_above_threshold"] == pytest.approx(0.5)
    assert summary["percentiles"] == {"50": pytest.approx(0.505)}


def test_copy_metrics_hand_computed():
    sims = torch.tensor([[0.9, 0.2], [0.4, 0.3], [0.6, 0.1]])
    neighbours = torch.tensor([[0, 1], [2, 0], [1, 2]])
    metrics = sscd.copy_metrics(sims, neighbours, ["a", "b", "c"], ["a", "a", "c"], threshold=0.5)
    assert metrics["mean"] == pytest.approx((0.9 + 0.4 + 0.6) / 3)
    assert metrics["count_above_threshold"] == 2 and metrics["share_above_threshold"] == pytest.approx(2 / 3)
    assert metrics["top1_is_source_share"] == pytest.approx(1 / 3)  # only the first: a -> a
    assert metrics["topk_mean"] == [pytest.approx(1.9 / 3), pytest.approx(0.2)]
    assert (metrics["k"], metrics["num_synthetic"], metrics["num_real"]) == (2, 3, 3)
    assert metrics["sim95"] == pytest.approx(0.6 + 0.3 * 0.9)  # between 0.6 and 0.9, 90 % of the way


def test_top_queries_orders_by_top1_then_index():
    sims = torch.tensor([[0.3], [0.8], [0.3], [0.9]])
    assert sscd.top_queries(sims, 3) == [3, 1, 0]


def test_transform_short_side_or_square_and_imagenet_normalisation():
    from PIL import Image

    white = Image.new("RGB", (100, 50), (255, 255, 255))
    short = sscd.sscd_transform(20)(white)
    assert short.shape == (3, 20, 40)
    assert sscd.sscd_transform(20, square=True)(white).shape == (3, 20, 20)
    expected = [(1 - m) / s for m, s in zip(sscd.IMAGENET_MEAN, sscd.IMAGENET_STD, strict=True)]
    torch.testing.assert_close(short[:, 0, 0], torch.tensor(expected))


@pytest.fixture(scope="module")
def descriptor_file(tmp_path_factory):
    from realfake.zoo import SSCD_FILE, build_sscd

    out = tmp_path_factory.mktemp("sscd")
    build_sscd(out)
    return out / SSCD_FILE


def test_tiny_descriptor_roundtrip(descriptor_file, tmp_path):
    from realfake.zoo import SSCD_FILE, TinyDescriptor, build_sscd

    model = sscd.load_descriptor_model(descriptor_file)
    images = torch.randn(3, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    descriptors = model(images)
    assert descriptors.shape == (3, 64)
    torch.testing.assert_close(descriptors.norm(dim=1), torch.ones(3))
    torch.manual_seed(4)  # build_sscd's seed: the file holds exactly the eager module's weights
    torch.testing.assert_close(descriptors, TinyDescriptor().eval()(images))
    build_sscd(tmp_path)
    assert (tmp_path / SSCD_FILE).read_bytes() == descriptor_file.read_bytes()


def test_load_descriptor_model_refuses_other_files(tmp_path):
    from realfake.io import UnsafeFileError

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        sscd.load_descriptor_model(tmp_path / "missing.pt")
    (tmp_path / "state.pt").write_bytes(b"not a torchscript archive")
    with pytest.raises(UnsafeFileError, match="state.pt"):
        sscd.load_descriptor_model(tmp_path / "state.pt")


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_compute_descriptors_groups_shapes_and_keeps_order(descriptor_file, batch_size):
    model = sscd.load_descriptor_model(descriptor_file)
    generator = torch.Generator().manual_seed(1)
    shapes = [(32, 32), (32, 48), (32, 32), (48, 32), (32, 48), (32, 32)]
    images = [torch.randn(3, h, w, generator=generator) for h, w in shapes]
    descriptors = sscd.compute_descriptors(model, images, batch_size=batch_size)
    expected = torch.cat([model(image[None]) for image in images])
    torch.testing.assert_close(descriptors, expected, atol=1e-5, rtol=1e-4)


def test_main_finds_copies_of_real_images(descriptor_file, tiny_index, tmp_path):
    """``describe`` then ``match`` in-process on synthetic shards that are byte copies of real
    training images: each one's top-1 neighbour is its source, at similarity 1."""
    import json

    from PIL import Image

    from realfake.synthesize import write_shard

    index_path = tmp_path / "index.parquet"
    tiny_index.to_parquet(index_path)
    train = tiny_index[tiny_index["split"] == "train"].reset_index(drop=True)
    copies = train.iloc[[5, 0, 17, 9]]
    samples = [
        {
            "__key__": f"copy{i}__p0",
            "jpg": open(row["path"], "rb").read(),
            "cls": str(row["label"]).encode(),
            "json": json.dumps({"image_id": row["image_id"], "label": int(row["label"])}).encode(),
        }
        for i, row in copies.iterrows()
    ]
    shard = tmp_path / "shard-00000.tar"
    write_shard(samples, shard)
    common = [
        "--index",
        str(index_path),
        "--model",
        str(descriptor_file),
        "--resize",
        "64",
        "--batch-size",
        "4",
    ]
    real = tmp_path / "real_descriptors.safetensors"
    sscd.main(["describe", *common, "--out", str(real)])
    out, figure = tmp_path / "metrics.json", tmp_path / "pairs.png"
    match = ["--real-descriptors", str(real), "--shards", str(shard), "--k", "5", "--pairs", "3"]
    sscd.main(["match", *common, *match, "--out", str(out), "--figure", str(figure)])

    metrics = json.loads(out.read_text())
    assert (metrics["num_synthetic"], metrics["num_real"], metrics["k"]) == (4, 24, 5)
    assert metrics["mean"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["top1_is_source_share"] == 1.0 and metrics["share_above_threshold"] == 1.0
    assert len(metrics["top_pairs"]) == 3 and len(metrics["top_pairs"][0]["real"]) == 5
    assert metrics["top_pairs"][0]["real"][0]["image_id"] in set(copies["image_id"])
    assert metrics["descriptor_dim"] == 64
    assert Image.open(figure).format == "PNG"
    assert (tmp_path / "metrics.json.prov.json").exists() and (tmp_path / "pairs.png.prov.json").exists()


def test_config_threshold_out_of_range_names_key_and_line():
    from pathlib import Path

    import yaml

    from realfake.config import ConfigError, key_lines, validate

    config_file = Path(__file__).resolve().parents[2] / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["sscd"]["paper"]["threshold"] = 1.5
    with pytest.raises(ConfigError) as err:
        validate(config, config_file)
    line = key_lines(config_file.read_text())[("sscd", "paper", "threshold")]
    assert f"config.yaml:{line}: sscd.paper.threshold: 1.5 is greater than the maximum of 1" in str(err.value)


def test_real_descriptors_of_another_index_are_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "real_descriptors.safetensors"
    save_file({"descriptors": torch.eye(3)}, path, {"index_sha256": "aaa"})
    torch.testing.assert_close(sscd.load_real_descriptors(path, "aaa"), torch.eye(3))
    with pytest.raises(ValueError, match="another index.parquet"):
        sscd.load_real_descriptors(path, "bbb")
