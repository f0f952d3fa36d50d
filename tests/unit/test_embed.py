"""Class means by hand, CLIP embeddings with the tiny zoo, and the run -> means round trip."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from realfake.embed import EmbeddingError, class_means, embed_images, main, merge_shards, save_means
from realfake.models import load_clip_vision


def test_class_means_by_hand():
    embeds = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, -1.0]])
    means, counts = class_means(embeds, torch.tensor([0, 0, 1]), num_classes=2)
    assert torch.equal(means, torch.tensor([[2.0, 3.0], [10.0, -1.0]]))
    assert counts.tolist() == [2, 1] and counts.dtype == torch.int64 and means.dtype == torch.float32


def test_class_means_bytes_do_not_depend_on_the_temporary_name(tmp_path):
    means, counts = torch.randn(3, 4), torch.tensor([2, 1, 5])
    for name in ("class_means.pt", "copy.pt"):
        save_means(tmp_path / name, means, counts)
    assert (tmp_path / "class_means.pt").read_bytes() == (tmp_path / "copy.pt").read_bytes()


def test_class_means_rejects_empty_and_out_of_range_classes():
    embeds = torch.ones(3, 2)
    with pytest.raises(EmbeddingError, match=r"2 of 4 classes have no images: labels \[1, 3\]"):
        class_means(embeds, torch.tensor([0, 2, 2]), num_classes=4)
    with pytest.raises(EmbeddingError, match=r"0\.\.1"):
        class_means(embeds, torch.tensor([0, 1, 2]), num_classes=2)
    with pytest.raises(EmbeddingError, match="labels"):
        class_means(embeds, torch.tensor([0, 1]), num_classes=2)


def test_embed_images_projected_unnormalised_and_batch_independent(tiny_zoo, tiny_index):
    processor, model = load_clip_vision(str(tiny_zoo / "clip"))
    images = [Image.open(p).convert("RGB") for p in tiny_index["path"][:3]]
    embeds = embed_images(processor, model, images)
    assert embeds.shape == (3, model.config.projection_dim) and embeds.dtype == torch.float32
    assert not torch.allclose(embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(embed_images(processor, model, images[1:2]), embeds[1:2])


def test_run_shards_then_means_match_direct_computation(tiny_zoo, tiny_index, tmp_path):
    index_file = tmp_path / "index.parquet"
    tiny_index.to_parquet(index_file, index=False)
    common = ["--index", str(index_file), "--model", str(tiny_zoo / "clip"), "--shard-size", "16"]
    common += ["--batch-size", "5", "--device", "cpu", "--threads", "1"]
    shards = [tmp_path / "embeddings" / f"shard-{s:05d}.safetensors" for s in (0, 1)]
    for shard, out in enumerate(shards):
        main(["run", *common, "--shard", str(shard), "--out", str(out)])
    with safe_open(str(shards[1]), framework="pt") as f:
        assert json.loads(f.metadata()["image_ids"]) == tiny_index["image_id"][16:24].tolist()
        assert f.get_tensor("embeds").shape == (8, 32) and f.get_tensor("embeds").dtype == torch.float32
        assert f.get_tensor("labels").tolist() == tiny_index["label"][16:24].tolist()

    out = tmp_path / "class_means.pt"
    main(["means", "--inputs", *map(str, shards), "--num-classes", "4", "--out", str(out)])
    saved = torch.load(out, weights_only=True)
    assert saved["counts"].tolist() == [6, 6, 6, 6]
    assert saved["means"].shape == (4, 32) and saved["means"].dtype == torch.float32
    processor, model = load_clip_vision(str(tiny_zoo / "clip"))
    train = tiny_index[tiny_index["split"] == "train"]
    direct = embed_images(processor, model, [Image.open(p).convert("RGB") for p in train["path"]])
    expected, _ = class_means(direct, torch.tensor(train["label"].to_numpy()), 4)
    torch.testing.assert_close(saved["means"], expected)

    with pytest.raises(EmbeddingError, match="8 image ids occur in more than one shard"):
        merge_shards([shards[1], shards[1]])
    with pytest.raises(EmbeddingError, match=r"classes have no images: labels \[3\]"):
        main(["means", "--inputs", str(shards[0]), "--num-classes", "4", "--out", str(tmp_path / "x.pt")])
    assert not (tmp_path / "x.pt").exists()
