"""Provenance records, code hashes, lineage, --verify and the RO-Crate export.

The lineage tests run a toy stage (``toy_stage``, decorated exactly like the real ``main``s) to
build a small DAG in a temp dir: source -> index -> shards (+ a hub model) -> lora -> classifier
-> metrics, plus a table whose cells point at the metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import pytest

from realfake import cli, lineage, provenance
from realfake.io import atomic_path


@provenance.stage(inputs=("inputs", "model"))
def toy_stage(argv: list[str] | None = None) -> None:
    """Writes the concatenation of its inputs and ``--salt`` to ``--out``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", nargs="*", default=[])
    parser.add_argument("--model")
    parser.add_argument("--salt", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with atomic_path(args.out) as tmp:
        tmp.write_bytes(b"".join(Path(p).read_bytes() for p in args.inputs) + args.salt.encode())


def flip_byte(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def dag(tmp_path, monkeypatch):
    """A finished toy DAG in ``tmp_path`` (the working directory), paths relative like the rules'."""
    monkeypatch.chdir(tmp_path)
    hub = tmp_path / "hf" / "models--org--tiny-sd" / "refs"
    hub.mkdir(parents=True)
    (hub / "main").write_text("abc123\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    Path("data").mkdir()
    Path("data/raw.txt").write_text("raw images")
    toy_stage(["--inputs", "data/raw.txt", "--salt", "index", "--out", "results/index.parquet"])
    shards = [f"results/synth/shard-{s}.tar" for s in range(3)]
    toy_stage(["--inputs", "results/index.parquet", "--salt", "lora", "--out", "results/lora.safetensors"])
    for s, shard in enumerate(shards):
        toy_stage(["--inputs", "results/index.parquet", "results/lora.safetensors", "--model", "org/tiny-sd",
                   "--salt", str(s), "--out", shard])  # fmt: skip
    toy_stage(["--inputs", *shards, "--salt", "train", "--out", "results/x1/classifier.safetensors"])
    toy_stage(["--inputs", "results/index.parquet", "results/x1/classifier.safetensors", "--out",
               "results/x1/metrics.json"])  # fmt: skip
    return tmp_path


# --- records ------------------------------------------------------------------------------------


def test_split_argv_subcommands_lists_flags_and_equals():
    subs, opts = provenance.split_argv(
        ["run", "--inputs", "a", "b", "--class-means=m.pt", "--no-caption", "--lr", "-1e-4", "--shard", "3"]
    )
    assert subs == ["run"]
    assert opts == {
        "inputs": ["a", "b"],
        "class_means": "m.pt",
        "no_caption": True,
        "lr": "-1e-4",
        "shard": "3",
    }


def test_record_holds_hashes_params_code_and_host(dag):
    record = json.loads(Path("results/x1/metrics.json.prov.json").read_text())
    metrics = b"raw imagesindex" + Path("results/x1/classifier.safetensors").read_bytes()
    assert record["artifact"] == "results/x1/metrics.json"
    assert record["outputs"][0]["sha256"] == hashlib.sha256(metrics).hexdigest()
    assert [i["path"] for i in record["inputs"]] == [
        "results/index.parquet",
        "results/x1/classifier.safetensors",
    ]
    assert record["inputs"][0]["sha256"] == hashlib.sha256(b"raw imagesindex").hexdigest()
    assert record["params"] == {}
    assert record["command"][1:3] == ["-m", "realfake.test_provenance"]
    assert set(record["code"]) >= {"commit", "dirty", "hash", "files", "module"}
    assert record["host"]["hostname"] and record["started"] <= record["ended"]
    assert "pytest" in record["packages"]


def test_hub_model_is_a_reference_with_its_cached_revision(dag):
    record = json.loads(Path("results/synth/shard-1.tar.prov.json").read_text())
    model = next(i for i in record["inputs"] if i["flag"] == "model")
    assert model == {"flag": "model", "ref": "org/tiny-sd", "type": "hub", "revision": "abc123"}
    assert record["params"] == {"salt": "1"}


def test_slurm_job_id_is_recorded(dag, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    toy_stage(["--inputs", "data/raw.txt", "--out", "results/other.txt"])
    assert json.loads(Path("results/other.txt.prov.json").read_text())["job"]["slurm_job_id"] == "4242"


def test_rule_names_itself_in_the_record(dag, monkeypatch):
    record = json.loads(Path("results/x1/metrics.json.prov.json").read_text())
    assert record["rule"] is None  # run by hand: no rule around it
    monkeypatch.setenv(provenance.RULE_VAR, "train_classifier")
    toy_stage(["--inputs", "data/raw.txt", "--out", "results/lira/real/model-0/classifier.safetensors"])
    record = json.loads(Path("results/lira/real/model-0/classifier.safetensors.prov.json").read_text())
    assert record["rule"] == "train_classifier"
    assert lineage.rule_of(record) == "train_classifier"  # as recorded, whatever the output path says


def test_directory_digest_of_a_subdirectory_follows_from_the_parent_manifest(tmp_path):
    (tmp_path / "zoo" / "sd").mkdir(parents=True)
    (tmp_path / "zoo" / "sd" / "w.bin").write_bytes(b"w")
    (tmp_path / "zoo" / "clip.bin").write_bytes(b"c")
    (tmp_path / "zoo" / ".snakemake_timestamp").write_bytes(b"")  # added by Snakemake after the job
    parent = provenance.describe_path(tmp_path / "zoo", manifest=True)
    child = provenance.describe_path(tmp_path / "zoo" / "sd")
    assert parent["manifest"] == {
        "clip.bin": hashlib.sha256(b"c").hexdigest(),
        "sd/w.bin": hashlib.sha256(b"w").hexdigest(),
    }
    line = f"w.bin\0{hashlib.sha256(b'w').hexdigest()}\n".encode()
    assert child["sha256"] == hashlib.sha256(line).hexdigest()
    assert provenance.manifest_digest(provenance.sub_manifest(parent["manifest"], "sd")) == child["sha256"]


def test_large_input_is_identified_by_its_listing(tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "a.jpg").write_bytes(b"12345")
    entry = provenance.describe_path(tmp_path / "big", limit=4)
    assert entry["digest"] == "listing"
    assert entry["sha256"] == hashlib.sha256(b"a.jpg\x005\n").hexdigest()


# --- code hashes --------------------------------------------------------------------------------


def write_package(root: Path) -> Path:
    pkg = root / "realfake"
    pkg.mkdir()
    sources = {
        "__init__": "",
        "synthesize": "from realfake.models import load\nfrom realfake import shards\nimport numpy\n",
        "models": "from . import io\nfrom .provenance import stage\n",
        "shards": "",
        "io": "",
        "provenance": "import realfake.io\n",
        "recipes": "import realfake.io\n",
    }
    for name, text in sources.items():
        (pkg / f"{name}.py").write_text(text)
    return pkg


def test_module_closure_follows_absolute_and_relative_imports(tmp_path):
    pkg = write_package(tmp_path)
    assert provenance.module_closure("synthesize", pkg) == (
        "__init__",
        "io",
        "models",
        "shards",
        "synthesize",
    )
    assert provenance.module_closure("recipes", pkg) == ("__init__", "io", "recipes")


def test_code_hash_changes_with_imported_modules_only(tmp_path):
    pkg = write_package(tmp_path)
    before = {
        m: provenance.manifest_digest(provenance.code_files.__wrapped__(m, pkg))
        for m in ("synthesize", "recipes")
    }
    (pkg / "shards.py").write_text("# edited\n")
    (pkg / "provenance.py").write_text("import realfake.io  # edited\n")
    after = {
        m: provenance.manifest_digest(provenance.code_files.__wrapped__(m, pkg))
        for m in ("synthesize", "recipes")
    }
    assert after["synthesize"] != before["synthesize"]
    assert after["recipes"] == before["recipes"]


def test_real_stage_closures():
    assert "synthesize" not in provenance.module_closure("train")
    assert {"io", "models", "conditioning", "shards"} <= set(provenance.module_closure("synthesize"))
    assert "provenance" not in provenance.module_closure("synthesize")
    assert provenance.code_hash("synthesize") == provenance.code_hash("synthesize")


# --- lineage ------------------------------------------------------------------------------------


def test_lineage_of_metrics_reaches_the_source_and_the_hub_model(dag):
    root, graph = lineage.build(Path("results/x1/metrics.json"))
    keys = {n.key for n in lineage.walk(root)}
    assert keys == {
        "results/x1/metrics.json", "results/x1/classifier.safetensors", "results/index.parquet",
        "results/lora.safetensors", "data/raw.txt", "hub:org/tiny-sd",
        *(f"results/synth/shard-{s}.tar" for s in range(3)),
    }  # fmt: skip
    assert graph.nodes["data/raw.txt"].kind == "source"
    assert graph.nodes["hub:org/tiny-sd"].sha256 == "abc123"
    doc = lineage.to_json(root)
    assert doc["nodes"]["results/synth/shard-0.tar"]["params"] == {"salt": "0"}
    assert [e["node"] for e in doc["nodes"]["results/synth/shard-0.tar"]["inputs"]] == [
        "results/index.parquet", "results/lora.safetensors", "hub:org/tiny-sd",
    ]  # fmt: skip


def test_render_prints_each_node_once(dag):
    text = lineage.render(lineage.build(Path("results/x1/metrics.json"))[0])
    assert text.splitlines()[0].startswith("results/x1/metrics.json  sha256:")
    assert text.count("results/index.parquet  (see above)") == 4  # read by the LoRA and 3 shards
    assert "params: salt=0" in text


def test_lineage_resolves_when_the_tree_moves(dag, tmp_path_factory, monkeypatch):
    moved = tmp_path_factory.mktemp("moved")
    for item in ("results", "data"):
        (dag / item).rename(moved / item)
    monkeypatch.chdir(moved)
    root, _ = lineage.build(Path("results/x1/metrics.json"))
    assert lineage.verify(root) == []


def test_verify_clean_then_flipped_bytes_in_shard_and_lora(dag):
    assert lineage.verify(lineage.build(Path("results/x1/metrics.json"))[0]) == []
    flip_byte(Path("results/synth/shard-2.tar"))
    flip_byte(Path("results/lora.safetensors"), offset=3)
    problems = lineage.verify(lineage.build(Path("results/x1/metrics.json"))[0])
    assert {(p.kind, p.key) for p in problems} == {
        ("tampered", "results/synth/shard-2.tar"),
        ("tampered", "results/lora.safetensors"),
    }


def test_verify_reports_stale_consumers_replaced_sources_and_missing_files(dag):
    toy_stage(["--inputs", "data/raw.txt", "--salt", "lora-v2", "--out", "results/lora.safetensors"])
    Path("data/raw.txt").write_text("other raw images")
    Path("results/synth/shard-0.tar").unlink()
    problems = {(p.kind, p.key) for p in lineage.verify(lineage.build(Path("results/x1/metrics.json"))[0])}
    assert problems == {
        *(("stale", f"results/synth/shard-{s}.tar") for s in range(3)),  # consumed the old LoRA
        ("replaced", "data/raw.txt"),
        ("missing", "results/synth/shard-0.tar"),
    }


def test_verify_reports_code_changed_since_the_job(dag):
    record_file = Path("results/lora.safetensors.prov.json")
    record = json.loads(record_file.read_text())
    record["code"]["hash"] = "0" * 64
    record["code"]["files"]["realfake/__init__.py"] = "0" * 64
    record_file.write_text(json.dumps(provenance.seal(record)))  # as if written by older code
    problems = lineage.verify(lineage.build(Path("results/x1/metrics.json"))[0])
    assert [(p.kind, p.key) for p in problems] == [("stale-code", "results/lora.safetensors")]
    assert "realfake/__init__.py" in problems[0].detail


@pytest.mark.chaos
def test_truncated_edited_and_misshapen_records_are_named_and_the_lineage_goes_on(dag, capsys):
    """A record cut short (a full disk, a crash of a copy), one edited by hand, one missing a key:
    each is a ``bad-record`` naming the record file, and verification goes on through the rest."""
    lora, shard, index = (Path(f"results/{p}.prov.json") for p in ("lora.safetensors", "synth/shard-1.tar",
                                                                    "index.parquet"))  # fmt: skip
    lora.write_bytes(lora.read_bytes()[:400])
    edited = json.loads(shard.read_text())
    edited["params"]["salt"] = "7"  # what someone "fixing" a record by hand would do
    shard.write_text(json.dumps(edited, indent=1))
    misshapen = json.loads(index.read_text())
    del misshapen["outputs"]
    index.write_text(json.dumps(misshapen))

    problems = lineage.verify(lineage.build(Path("results/x1/metrics.json"))[0])
    bad = {p.key: p.detail for p in problems if p.kind == "bad-record"}
    assert set(bad) == {"results/lora.safetensors", "results/synth/shard-1.tar", "results/index.parquet"}
    assert bad["results/lora.safetensors"].startswith(f"record {lora} is not valid JSON")
    assert "of 400 bytes" in bad["results/lora.safetensors"]
    assert bad["results/synth/shard-1.tar"].startswith(f"record {shard} ")
    assert "edited after the job wrote it" in bad["results/synth/shard-1.tar"]
    assert bad["results/index.parquet"] == f"record {index} key 'outputs' is missing"
    assert {p.kind for p in problems} == {"bad-record"}, problems  # the artifacts themselves are intact

    flip_byte(Path("results/lora.safetensors"))  # its bytes are still checked against its consumers
    problems = lineage.verify(lineage.build(Path("results/x1/metrics.json"))[0])
    assert ("replaced", "results/lora.safetensors") in {(p.kind, p.key) for p in problems}

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["provenance", "results/x1/metrics.json", "--verify"])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert f"BAD-RECORD: results/lora.safetensors: record {lora} is not valid JSON" in out


@pytest.mark.chaos
def test_reindented_record_keeps_its_seal(dag):
    record_file = Path("results/lora.safetensors.prov.json")
    record_file.write_text(json.dumps(json.loads(record_file.read_text())))  # one line, same content
    assert lineage.verify(lineage.build(Path("results/x1/metrics.json"))[0]) == []


def test_unrecorded_artifact_fails_verification(dag):
    problems = lineage.verify(lineage.build(Path("data/raw.txt"))[0])
    assert [(p.kind, p.key) for p in problems] == [("unrecorded", "data/raw.txt")]


# --- tables -------------------------------------------------------------------------------------


@pytest.fixture
def table(dag):
    toy_stage(["--inputs", "data/raw.txt", "--salt", "x2", "--out", "results/x2/metrics.json"])
    path = Path("results/tables/table3.csv")
    path.parent.mkdir(parents=True)
    path.write_text("method,x1,x2\nReal-Fake,0.5,0.6\n")
    cells = {
        ("Real-Fake", "x1"): ["results/x1/metrics.json"],
        ("Real-Fake", "x2"): ["results/x2/metrics.json"],
    }
    provenance.write_cell_sources(path, cells)
    return path


def test_cell_lineage_reaches_the_index(table):
    root, _ = lineage.build(table, ("Real-Fake", "x1"))
    assert root.key == "results/tables/table3.csv[Real-Fake,x1]"
    keys = {n.key for n in lineage.walk(root)}
    assert {"results/x1/metrics.json", "results/index.parquet", "data/raw.txt"} <= keys
    assert "results/x2/metrics.json" not in keys


def test_table_without_cell_covers_every_cell(table):
    flip_byte(Path("results/x2/metrics.json"))
    root, _ = lineage.build(table)
    assert [(p.kind, p.key) for p in lineage.verify(root)] == [("tampered", "results/x2/metrics.json")]
    assert lineage.verify(lineage.build(table, ("Real-Fake", "x1"))[0]) == []


@pytest.mark.chaos
def test_truncated_cells_file_is_a_bad_record_of_the_table(table):
    cells = provenance.cells_path(table)
    cells.write_text(cells.read_text()[:30])
    problems = lineage.verify(lineage.build(table)[0])
    assert [(p.kind, p.key) for p in problems] == [("bad-record", "results/tables/table3.csv")]
    assert problems[0].detail.startswith(f"record {cells} is not valid JSON")


def test_unknown_cell_is_an_error(table):
    with pytest.raises(KeyError, match="no cell"):
        lineage.build(table, ("Real-Fake", "x10"))


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_json_and_verify_exit_code(dag, capsys):
    cli.main(["provenance", "results/x1/metrics.json", "--json", "--verify"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["root"] == "results/x1/metrics.json" and doc["problems"] == []
    flip_byte(Path("results/synth/shard-0.tar"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["provenance", "results/x1/metrics.json", "--verify"])
    assert exit_info.value.code == 1
    assert "TAMPERED: results/synth/shard-0.tar: sha256" in capsys.readouterr().out


def test_cli_cell_needs_a_table(dag):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["provenance", "results/x1/metrics.json", "--cell", "a,b"])
    assert exit_info.value.code == 2


# --- scale --------------------------------------------------------------------------------------


def write_record(record: dict) -> None:
    """A record as ``write_records`` writes it, minus the fsync (3,000 of them)."""
    path = record["outputs"][0]["path"]
    provenance.record_path(path).write_text(json.dumps({**record, "artifact": path}))


def test_lineage_of_3000_shard_records_resolves_in_seconds(tmp_path, monkeypatch):
    """An IN-1K-sized fan-in: 3,000 shard records, each reading the same index, under one metrics."""
    monkeypatch.chdir(tmp_path)
    Path("index.parquet").write_text("index")
    template = provenance.build_record("toy", [], (), (), "t0", "t1", 0.0)
    index = {"flag": "index", "path": "index.parquet", "type": "file", "digest": "content",
             "sha256": hashlib.sha256(b"index").hexdigest()}  # fmt: skip
    shards = []
    for s in range(3000):
        shard = Path(f"synth/shard-{s:05d}.tar")
        shard.parent.mkdir(exist_ok=True)
        shard.write_text(str(s))
        out = {"flag": "out", "path": str(shard), "type": "file", "digest": "content",
               "sha256": hashlib.sha256(str(s).encode()).hexdigest()}  # fmt: skip
        write_record({**template, "inputs": [index], "outputs": [out]})
        shards.append({**out, "flag": "shards"})
    Path("metrics.json").write_text("{}")
    out = {"flag": "out", "path": "metrics.json", "type": "file", "digest": "content",
           "sha256": hashlib.sha256(b"{}").hexdigest()}  # fmt: skip
    write_record({**template, "inputs": shards, "outputs": [out]})
    start = time.perf_counter()
    root, graph = lineage.build(Path("metrics.json"))
    text = lineage.render(root)
    built = time.perf_counter()
    problems = lineage.verify(root)
    verified = time.perf_counter()
    print(f"3,000-shard lineage: build + render {built - start:.2f} s, verify {verified - built:.2f} s")
    assert len(graph.nodes) == 3002 and text.count("(see above)") == 2999 and problems == []
    assert verified - start < 10


# --- RO-Crate -----------------------------------------------------------------------------------


def entities(crate_dir: Path) -> dict[str, dict]:
    doc = json.loads((crate_dir / "ro-crate-metadata.json").read_text())
    assert "https://w3id.org/ro/terms/workflow-run/context" in doc["@context"]
    return {e["@id"]: e for e in doc["@graph"]}


def ids(value) -> list[str]:
    return [v["@id"] for v in (value if isinstance(value, list) else [value])]


def types(entity: dict) -> set[str]:
    return set(entity["@type"]) if isinstance(entity["@type"], list) else {entity["@type"]}


def test_ro_crate_is_a_provenance_run_crate(dag, tmp_path_factory):
    from rocrate.rocrate import ROCrate

    from realfake.runcrate import write_crate

    root, graph = lineage.build(Path("results/x1/metrics.json"))
    out = write_crate(root, graph, tmp_path_factory.mktemp("crate") / "crate")
    graph_ids = entities(out)
    crate_root = graph_ids["./"]
    assert {"https://w3id.org/ro/wfrun/provenance/0.5", "https://w3id.org/ro/wfrun/workflow/0.5",
            "https://w3id.org/ro/wfrun/process/0.5"} <= set(ids(crate_root["conformsTo"]))  # fmt: skip
    workflow = graph_ids[crate_root["mainEntity"]["@id"]]
    assert {"File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"} <= types(workflow)
    jobs = [e for e in graph_ids.values() if "CreateAction" in types(e) and e["@id"].startswith("#job-")]
    assert len(jobs) == 7  # index, lora, 3 shards, classifier, metrics
    steps = {s: graph_ids[s] for s in ids(workflow["step"])}
    for job in jobs:
        tool = graph_ids[job["instrument"]["@id"]]
        assert "SoftwareApplication" in types(tool) and tool["@id"] in ids(workflow["hasPart"])
        control = next(e for e in graph_ids.values() if e.get("object") == {"@id": job["@id"]})
        assert "ControlAction" in types(control)
        assert steps[control["instrument"]["@id"]]["workExample"]["@id"] == tool["@id"]
        assert job["startTime"] <= job["endTime"]
        for item in ids(job["result"]) + ids(job.get("object", [])):
            assert item in graph_ids, item
        (result,) = ids(job["result"])
        assert graph_ids[result]["sha256"] == graph.nodes[result].sha256
        assert (out / result).is_file()  # copied into the crate
    shard = next(j for j in jobs if ids(j["result"]) == ["results/synth/shard-0.tar"])
    assert "https://huggingface.co/org/tiny-sd/" in ids(shard["object"])
    value = next(graph_ids[i] for i in ids(shard["object"]) if i.startswith("#job-"))
    assert value["@type"] == "PropertyValue" and value["name"] == "salt" and value["value"] == "0"
    assert graph_ids[value["exampleOfWork"]["@id"]]["@type"] == "FormalParameter"
    organize = graph_ids["#engine-run"]
    assert organize["@type"] == "OrganizeAction" and len(ids(organize["object"])) == 7
    run = graph_ids[organize["result"][0]["@id"]]
    assert run["instrument"]["@id"] == workflow["@id"]
    assert ids(run["result"]) == ["results/x1/metrics.json"]
    assert set(ids(run["object"])) == {"data/raw.txt", "https://huggingface.co/org/tiny-sd/"}
    assert ROCrate(out).mainEntity.id == workflow["@id"]
