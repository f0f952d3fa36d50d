"""``realfake data imagenet-val`` on a fake flat validation folder, and docs/data.md's config example.

The fake: twelve 8 px JPEGs named as in ILSVRC2012_img_val.tar, three classes, every label source
the tool accepts (devkit ground truth + meta.mat / text mapping, per-image labels, Kaggle's CSV).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from realfake import cli
from realfake.config import ConfigError, validate
from realfake.dataprep import (
    MODES,
    VAL_IMAGES,
    DataprepError,
    Outcome,
    Placement,
    count_warning,
    labels_from_ground_truth,
    main,
    parse_args,
    parse_ground_truth,
    parse_image_labels,
    parse_synset_mapping,
    plan_arrangement,
    read_meta_mat,
    val_number,
)
from realfake.index import build_index

REPO = Path(__file__).resolve().parents[2]
#: ILSVRC2012_IDs 1, 2, 3 of the fake devkit (the real ID 1 is kit fox too; 2 and 3 are not these).
WNIDS = ["n02119789", "n01443537", "n01440764"]
NAMES = {"n02119789": "kit fox", "n01443537": "goldfish", "n01440764": "tench"}
COUNT = 12


def name(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def wnid_of(number: int) -> str:
    return WNIDS[(number - 1) % 3]


EXPECTED = {f"{wnid_of(n)}/{name(n)}" for n in range(1, COUNT + 1)}


def jpeg(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(path)


def flat_val(folder: Path) -> Path:
    """The flat folder: twelve distinct JPEGs and a file the tool must leave alone."""
    for number in range(1, COUNT + 1):
        jpeg(folder / name(number), shade=10 * number)
    (folder / "README.txt").write_text("not an image\n")
    return folder


def label_files(folder: Path) -> dict[str, Path]:
    """Every label source for the fake, all saying the same."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "ground_truth": folder / "ILSVRC2012_validation_ground_truth.txt",
        "mapping": folder / "synsets_in_id_order.txt",
        "map_clsloc": folder / "map_clsloc.txt",
        "labels": folder / "imagenet_2012_validation_synset_labels.txt",
        "solution": folder / "LOC_val_solution.csv",
        "meta": folder / "meta.mat",
    }
    files["ground_truth"].write_text("".join(f"{WNIDS.index(wnid_of(n)) + 1}\n" for n in range(1, COUNT + 1)))
    files["mapping"].write_text("".join(f"{w} {NAMES[w]}, more words\n" for w in WNIDS))
    files["map_clsloc"].write_text("n01440764 3 tench\nn02119789 1 kit_fox\nn01443537 2 goldfish\n")
    files["labels"].write_text("".join(f"{wnid_of(n)}\n" for n in range(1, COUNT + 1)))
    rows = [f"{name(n)[:-5]},{wnid_of(n)} 1 2 30 40 {wnid_of(n)} 5 6 7 8" for n in range(COUNT, 0, -1)]
    files["solution"].write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    synsets = [(i, w, NAMES[w], "", 0) for i, w in enumerate(WNIDS, 1)] + [
        (1001, "n00001740", "entity", "", 2)
    ]
    savemat(files["meta"], {"synsets": np.array(synsets, dtype=fields)})
    return files


def source_args(files: dict[str, Path], source: str) -> list[str]:
    if source in ("labels", "solution"):
        return ["--labels", str(files[source])]
    return ["--ground-truth", str(files["ground_truth"]), "--synsets", str(files[source])]


@pytest.fixture
def fake(tmp_path):
    """(flat folder, out folder, label files) under tmp_path."""
    return flat_val(tmp_path / "flat"), tmp_path / "imagenet" / "val", label_files(tmp_path / "devkit")


def run(
    flat: Path, out: Path, files: dict[str, Path], mode: str = "symlink", source: str = "meta"
) -> Outcome:
    argv = ["imagenet-val", "--val-dir", str(flat), "--out", str(out), "--mode", mode]
    return main(argv + source_args(files, source))


def arranged(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.glob("*/*")}


def snapshot(root: Path) -> list[tuple]:
    """Everything about every entry under ``root`` a run could change."""
    entries = []
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        link = os.readlink(path) if path.is_symlink() else None
        entries.append((path.relative_to(root).as_posix(), st.st_ino, st.st_mtime_ns, st.st_size, link))
    return entries


# --- pure parsing and planning -------------------------------------------------------------------


def test_val_number_reads_only_validation_image_names():
    assert val_number("ILSVRC2012_val_00000042.JPEG") == 42
    assert val_number("ILSVRC2012_val_00050000.jpeg") == 50000
    assert val_number("README.txt") is None
    assert val_number("ILSVRC2012_val_00000042.txt") is None
    assert val_number("n01440764_10026.JPEG") is None


def test_ground_truth_is_one_integer_per_line():
    assert parse_ground_truth("490\n361\n\n171\n", "gt.txt") == [490, 361, 171]
    with pytest.raises(DataprepError, match=r"gt.txt:2: expected one ILSVRC2012_ID"):
        parse_ground_truth("490\nn01440764\n", "gt.txt")


def test_synset_mapping_takes_ids_from_the_line_order_or_the_line():
    by_order = parse_synset_mapping("n02119789 kit fox, Vulpes macrotis\nn02100735 English setter\n", "m")
    assert by_order == {1: "n02119789", 2: "n02100735"}
    assert parse_synset_mapping("n02100735 2 English_setter\nn02119789 1 kit_fox\n", "m") == by_order
    with pytest.raises(DataprepError, match="m:2: ILSVRC2012_ID 1 appears twice"):
        parse_synset_mapping("n02119789 1 a\nn02100735 1 b\n", "m")
    with pytest.raises(DataprepError, match="a wnid appears twice"):
        parse_synset_mapping("n02119789\nn02119789\n", "m")
    with pytest.raises(DataprepError, match="m:1: expected a WordNet id"):
        parse_synset_mapping("kit_fox n02119789\n", "m")


def test_a_sorted_thousand_class_list_is_refused_as_the_label_order():
    """Kaggle's LOC_synset_mapping.txt is sorted (line i = label i), not ILSVRC2012_ID order."""
    wnids = [f"n{i:08d}" for i in range(1000)]
    with pytest.raises(DataprepError, match=r"sorted \(label\) order.*meta\.mat.*LOC_val_solution"):
        parse_synset_mapping("".join(f"{w} name\n" for w in wnids), "LOC_synset_mapping.txt")
    with_ids = parse_synset_mapping("".join(f"{w} {i}\n" for i, w in enumerate(wnids, 1)), "m")
    assert with_ids[1] == wnids[0]  # explicit IDs say what they mean: accepted


def test_per_image_labels_one_per_line_or_kaggle_csv():
    assert parse_image_labels("n01751748\nn09193705\n", "l") == {1: "n01751748", 2: "n09193705"}
    csv = "ImageId,PredictionString\nILSVRC2012_val_00000002,n01751748 1 2 3 4 n01751748 5 6 7 8\n"
    assert parse_image_labels(csv, "s.csv") == {2: "n01751748"}
    with pytest.raises(DataprepError, match="s.csv:2: expected"):
        parse_image_labels(csv.replace("n01751748 5", "n09193705 5"), "s.csv")
    with pytest.raises(DataprepError, match="l:2: expected a WordNet id"):
        parse_image_labels("n01751748\nILSVRC2012_val_00000002.JPEG n09193705\n", "l")


def test_ground_truth_ids_must_be_mapped():
    assert labels_from_ground_truth([2, 1, 2], {1: "n1", 2: "n2"}, "gt") == {1: "n2", 2: "n1", 3: "n2"}
    with pytest.raises(DataprepError, match=r"gt: ILSVRC2012_IDs \[7\] are not in the synset mapping"):
        labels_from_ground_truth([1, 7], {1: "n1"}, "gt")


def test_meta_mat_keeps_the_leaf_synsets(tmp_path):
    files = label_files(tmp_path)
    assert read_meta_mat(files["meta"]) == {1: WNIDS[0], 2: WNIDS[1], 3: WNIDS[2]}


def test_plan_splits_todo_existing_and_finished_and_refuses_inconsistency():
    labels = {1: "n01440764", 2: "n01443537", 3: "n01443537", 4: "n01440764"}
    known = set(labels.values())
    sources = {1: name(1), 2: name(2), 3: name(3)}
    plan = plan_arrangement(sources, [("n01443537", name(2)), ("n01440764", name(4))], labels, known)
    assert plan.todo == [Placement(1, name(1), "n01440764"), Placement(3, name(3), "n01443537")]
    assert plan.existing == [Placement(2, name(2), "n01443537")]
    assert plan.finished == [Placement(4, name(4), "n01440764")]
    assert (plan.total, plan.classes) == (4, {"n01440764", "n01443537"})
    with pytest.raises(DataprepError, match=r"1 image\(s\) have no label"):
        plan_arrangement({**sources, 9: name(9)}, [], labels, known)
    with pytest.raises(DataprepError, match=r"no ILSVRC-2012 class: \['n01443537'\]"):
        plan_arrangement(sources, [], labels, {"n01440764"})
    with pytest.raises(DataprepError, match="the labels put it under n01443537/"):
        plan_arrangement(sources, [("n01440764", name(2))], labels, known)
    with pytest.raises(DataprepError, match="arranged twice"):
        plan_arrangement(sources, [("n01440764", name(4)), ("n01443537", name(4))], labels, known)


def test_count_warning_only_off_the_full_set():
    assert count_warning(VAL_IMAGES) is None
    assert count_warning(12) == "12 validation images, the full set has 50,000: arranging what is there"


def test_arguments_need_exactly_one_label_source(capsys):
    base = ["imagenet-val", "--val-dir", "v", "--out", "o"]
    for extra in ([], ["--ground-truth", "g"], ["--labels", "l", "--synsets", "s"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(base + extra)
        assert exit_info.value.code == 2
    assert "give either --ground-truth and --synsets, or --labels" in capsys.readouterr().err


# --- on disk -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_arranges_and_a_second_run_changes_nothing(mode, fake, tmp_path, capsys, caplog):
    flat, out, files = fake
    originals = {p.name: p.read_bytes() for p in flat.iterdir()}
    assert run(flat, out, files, mode) == Outcome(placed=COUNT, in_place=0, classes=3)
    assert "12 validation images, the full set has 50,000" in caplog.text
    assert arranged(out) == EXPECTED
    for rel in EXPECTED:
        target = out / rel
        assert target.read_bytes() == originals[target.name]
        assert target.is_symlink() == (mode == "symlink")
        if mode in ("symlink", "hardlink"):
            assert target.samefile(flat / target.name)
        if mode == "copy":
            assert not target.samefile(flat / target.name)
    left = {p.name: p.read_bytes() for p in flat.iterdir()}
    assert left == ({"README.txt": originals["README.txt"]} if mode == "move" else originals)
    assert "12 validation images in 3 class folders" in capsys.readouterr().out

    before = snapshot(tmp_path)
    assert run(flat, out, files, mode) == Outcome(placed=0, in_place=COUNT, classes=3)
    assert capsys.readouterr().out.startswith("nothing to do: all 12 validation images")
    assert snapshot(tmp_path) == before


def test_a_different_existing_file_is_refused_naming_both_and_nothing_changes(fake, tmp_path):
    flat, out, files = fake
    target = out / WNIDS[0] / name(1)
    jpeg(target, shade=255)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run(flat, out, files, "copy")
    message = str(exit_info.value)
    assert f"refusing to overwrite {target}: it differs from {flat / name(1)}" in message
    assert "nothing was changed" in message
    assert snapshot(tmp_path) == before


def test_an_identical_copy_counts_as_in_place(fake):
    flat, out, files = fake
    run(flat, out, files, "copy")
    assert run(flat, out, files, "symlink") == Outcome(placed=0, in_place=COUNT, classes=3)
    assert not any(p.is_symlink() for p in out.glob("*/*"))


@pytest.mark.parametrize("source", ["mapping", "map_clsloc", "labels", "solution"])
def test_every_label_source_gives_the_arrangement_of_meta_mat(source, fake):
    flat, out, files = fake
    run(flat, out, files, "symlink", source)
    assert arranged(out) == EXPECTED


def test_in_place_move_gives_the_tree_the_imagenet_reader_indexes(tmp_path, capsys):
    root = tmp_path / "imagenet"
    flat_val(root / "val")
    files = label_files(tmp_path / "devkit")
    for wnid in WNIDS:
        jpeg(root / "train" / wnid / f"{wnid}_1.JPEG")
    argv = [
        "data",
        "imagenet-val",
        "--val-dir",
        str(root / "val"),
        "--out",
        str(root / "val"),
        "--mode",
        "move",
    ]
    cli.main(argv + source_args(files, "meta"))  # `realfake data ...` reaches the tool
    assert arranged(root / "val") == EXPECTED and (root / "val" / "README.txt").is_file()
    index = build_index(root, "imagenet", num_classes=3, train_size=3, test_size=COUNT)
    test = index[index["split"] == "test"]
    assert {Path(p).name: c for p, c in zip(test["path"], test["class_id"], strict=True)} == {
        name(n): wnid_of(n) for n in range(1, COUNT + 1)
    }
    assert dict(zip(index["class_id"], index["label"], strict=False)) == {
        "n01440764": 0,
        "n01443537": 1,
        "n02119789": 2,
    }  # sorted-wnid order, whatever the devkit's IDs
    assert set(index["class_name"]) == set(NAMES.values())
    capsys.readouterr()
    cli.main(argv + source_args(files, "meta"))
    assert capsys.readouterr().out.startswith("nothing to do")


def test_missing_inputs_are_errors_not_tracebacks(fake, tmp_path):
    flat, out, files = fake
    with pytest.raises(SystemExit, match="nope.txt is missing"):
        main(
            [
                "imagenet-val",
                "--val-dir",
                str(flat),
                "--out",
                str(out),
                "--labels",
                str(tmp_path / "nope.txt"),
            ]
        )
    with pytest.raises(SystemExit, match="is not a directory"):
        run(tmp_path / "absent", out, files)
    assert not out.exists()


# --- docs/data.md: the bring-your-own example ----------------------------------------------------


def doc_example() -> dict:
    """The ``# my.yaml`` block of docs/data.md (tested here, so the document cannot drift)."""
    text = (REPO / "docs" / "data.md").read_text()
    match = re.search(r"```yaml\n(# my\.yaml.*?)```", text, re.DOTALL)
    assert match, "docs/data.md lost its '# my.yaml' example"
    return yaml.safe_load(match.group(1))


def merged_config(example: dict) -> dict:
    """config.yaml updated with ``example`` as ``snakemake --configfile`` does (a deep update)."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, copy.deepcopy(example))
    return config


def test_docs_bring_your_own_example_validates_after_the_configfile_merge():
    example = doc_example()
    config = merged_config(example)
    validate(config)
    assert config["datasets"]["mydata"]["layout"] == "imagefolder"
    assert config["datasets"]["in1k"]["layout"] == "imagenet"  # the merge only overrode its root
    assert config["datasets"]["in1k"]["root"] == example["datasets"]["in1k"]["root"]
    broken = copy.deepcopy(example)
    del broken["datasets"]["mydata"]["recipe"]
    with pytest.raises(ConfigError, match="'recipe' is a required property"):
        validate(merged_config(broken))
