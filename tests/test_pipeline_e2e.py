"""End to end: the tiny default DAG (target ``tiny``) runs offline on CPU in a temporary directory,
every artifact loads with its community library, and a second run has nothing to do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tiny_run):
    """``results/`` of the session's finished tiny default (tests/conftest.py ``tiny_run``)."""
    return tiny_run.results


def test_index_loads_with_pandas(finished_run):
    import pandas as pd

    index = pd.read_parquet(finished_run / "tiny" / "index.parquet")
    assert (index["split"] == "train").sum() == 300 and (index["split"] == "test").sum() == 100


def test_class_means_load_weights_only(finished_run):
    import torch

    means = torch.load(finished_run / "tiny" / "class_means.pt", weights_only=True)
    assert means["means"].shape == (10, 32) and int(means["counts"].sum()) == 300


def test_lora_loads_into_diffusers_pipeline(finished_run):
    from safetensors.torch import load_file

    from realfake.models import load_sd_pipeline

    lora = finished_run / "tiny" / "lora" / "vg-mmd" / "lora.safetensors"
    assert any("lora" in key for key in load_file(lora))
    pipe = load_sd_pipeline(str(finished_run / "zoo" / "tiny" / "sd"))
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    assert pipe.get_active_adapters()


def test_synthetic_shards_read_with_webdataset(finished_run):
    import webdataset as wds

    shards = sorted((finished_run / "tiny" / "synth" / "realfake" / "pass-0").glob("shard-*.tar"))
    assert len(shards) == 3
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False).decode("pil"))
    assert len(samples) == 300
    first = samples[0]
    meta = first["json"]
    assert first["jpg"].size == (32, 32) and int(first["cls"]) == meta["label"]
    assert meta["pass"] == 0 and meta["prompt"].startswith("photo of ")


def test_classifier_loads_with_timm(finished_run):
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = finished_run / "tiny_x1" / "classifier.safetensors"
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    model = timm.create_model(
        meta["arch"], num_classes=int(meta["num_classes"]), **json.loads(meta["model_args"])
    )
    model.load_state_dict(load_file(path), strict=True)


def test_metrics_json(finished_run):
    metrics = json.loads((finished_run / "tiny_x1" / "metrics.json").read_text())
    assert metrics["num_test"] == 100 and metrics["num_classes"] == 10
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0


#: Science regression floor of the tiny default: synthetic-only top-1 on the real test split, well
#: above chance (10 classes: 10 %). Measured 78 % on a fresh clone on 2026-12-02, 64-78 % over
#: classifier seeds (docs/tiny-world.md); the zoo whose samples were colour blotches (a noisy
#: VAE posterior) gave 47-54 %, random weights 9 %. The floor is the issue's "never below 50 %":
#: it catches a method that no longer teaches, not a few points of drift.
TINY_X1_TOP1_FLOOR = 0.5


def test_synthetic_data_teach_the_classifier(finished_run):
    """The science of the tiny default: a classifier trained on our synthetic images alone scores
    far above chance on the real test images (the pretrained zoo made them carry their class)."""
    metrics = json.loads((finished_run / "tiny_x1" / "metrics.json").read_text())
    real = json.loads((finished_run / "tiny_real" / "metrics.json").read_text())
    assert metrics["top1"] >= TINY_X1_TOP1_FLOOR, metrics["top1"]
    assert real["top1"] >= 0.8, real["top1"]


def held_out_denoising_loss(finished_run, lora_scale: float) -> float:
    """Mean epsilon-MSE of the pretrained tiny SD (with the tiny default's LoRA at ``lora_scale``)
    on the *test* images, which fine-tuning never saw: same latents, noise and timesteps at every
    scale, prompts and class-mean guidance as in fine-tuning."""
    import pandas as pd
    import torch
    from diffusers import DDPMScheduler

    from realfake.conditioning import encode_condition, format_prompt
    from realfake.finetune import load_image
    from realfake.models import load_sd_pipeline

    pipe = load_sd_pipeline(str(finished_run / "zoo" / "tiny" / "sd"))
    lora = finished_run / "tiny" / "lora" / "vg-mmd" / "lora.safetensors"
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    index = pd.read_parquet(finished_run / "tiny" / "index.parquet")
    test = index[index["split"] == "test"]
    means = torch.load(finished_run / "tiny" / "class_means.pt", weights_only=True)["means"]
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        work = finished_run.parent  # index paths are relative to the workflow directory
        pixels = torch.stack([load_image(str(work / p), 32) for p in test["path"]])
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        prompts = [format_prompt("photo of {class_name}, {caption}", n) for n in test["class_name"]]
        cond = encode_condition(pipe.tokenizer, pipe.text_encoder, prompts, means[test["label"].tolist()])
        losses = []
        for _ in range(16):
            noise = torch.randn(latents.shape, generator=generator)
            t = torch.randint(0, 1000, (len(latents),), generator=generator)
            noisy = scheduler.add_noise(latents, noise, t)
            scale = {"scale": lora_scale}
            pred = pipe.unet(noisy, t, encoder_hidden_states=cond, cross_attention_kwargs=scale).sample
            losses.append(torch.nn.functional.mse_loss(pred, noise).item())
    return sum(losses) / len(losses)


def test_finetuned_lora_lowers_the_held_out_denoising_loss(finished_run):
    """Fine-tuning adapts the generator to the target distribution, not to its training images
    only: on the held-out test images its LoRA lowers the denoising loss of the pretrained UNet."""
    assert held_out_denoising_loss(finished_run, 1.0) < held_out_denoising_loss(finished_run, 0.0)


def test_sscd_copy_detection_report(finished_run):
    """Rule tiny builds the SSCD report (Fig. 4): all 300 synthetic images of pass 0 against the
    300 real training images, with the pairs figure and its provenance record."""
    from PIL import Image
    from safetensors.torch import load_file

    sscd_dir = finished_run / "tiny" / "sscd"
    real = load_file(sscd_dir / "real_descriptors.safetensors")["descriptors"]
    assert real.shape == (300, 64)
    metrics = json.loads((sscd_dir / "realfake" / "metrics.json").read_text())
    assert (metrics["num_synthetic"], metrics["num_real"], metrics["k"]) == (300, 300, 5)
    assert -1.0 <= metrics["percentiles"]["5"] <= metrics["sim95"] <= metrics["percentiles"]["99"] <= 1.0
    assert metrics["count_above_threshold"] == round(metrics["share_above_threshold"] * 300)
    assert len(metrics["top_pairs"]) == 3
    assert Image.open(sscd_dir / "realfake" / "pairs.png").format == "PNG"
    assert (sscd_dir / "realfake" / "pairs.png.prov.json").is_file()


def test_ood_json_of_rule_tiny(finished_run):
    """Rule tiny scores the classifier on the generated OOD sets (Table 4's contract): 10 classes x
    10 test images per set, the hard subset ("A") every 2nd class, scored over its 5 logits."""
    ood = json.loads((finished_run / "tiny_x1" / "ood.json").read_text())
    sizes = {name: (s["num_images"], s["num_classes"]) for name, s in ood["sets"].items()}
    assert sizes == {
        "imagenet-v2": (100, 10),
        "imagenet-sketch": (100, 10),
        "imagenet-r": (100, 10),
        "imagenet-a": (50, 5),
    }
    assert all(0.0 <= s["top1"] <= s["top5"] <= 1.0 for s in ood["sets"].values())
    metrics = json.loads((finished_run / "tiny_x1" / "metrics.json").read_text())
    assert ood["eval_transform"] == metrics["eval_transform"]


def test_second_run_has_nothing_to_do(tiny_run, finished_run):
    run = tiny_run.snakemake("tiny", "-n")
    assert run.returncode == 0
    assert "Nothing to be done" in run.stdout + run.stderr


def test_lira_membership_inference_on_the_tiny_default(tiny_run, finished_run):
    """results/tiny/lira/roc.png on the finished tiny run (its index, captions and embeddings are
    reused): M = 4 shadow models per pipeline, both pipelines' metrics and the Fig. 3 figure."""
    import numpy as np
    from PIL import Image

    from realfake.lira import ATTACKS, keep_masks

    run = tiny_run.snakemake("results/tiny/lira/roc.png")
    assert run.returncode == 0, run.stderr[-5000:]
    lira_dir = finished_run / "tiny" / "lira"
    keep = np.load(lira_dir / "keep.npy")
    np.testing.assert_array_equal(keep, keep_masks(4, 300))
    for pipeline in ("real", "synthetic"):
        metrics = json.loads((lira_dir / pipeline / "metrics.json").read_text())
        assert (metrics["pipeline"], metrics["num_models"], metrics["num_examples"]) == (pipeline, 4, 300)
        # every example is a member of exactly M/2 = 2 models; per model the count is keep's row sum
        assert metrics["models_per_example"] == 2
        assert metrics["members_per_model"] == keep.sum(axis=1).tolist()
        assert sum(metrics["members_per_model"]) == 4 * 300 // 2
        assert set(metrics["attacks"]) == set(ATTACKS)
        for result in metrics["attacks"].values():
            assert 0.0 <= result["auc"] <= 1.0 and 0.5 <= result["balanced_accuracy"] <= 1.0
            assert result["num_members"] == result["num_nonmembers"] == 600
            # 600 non-member scores cannot resolve FPR 0.1 % (1,000 needed) or 0.001 % (100,000)
            for fpr, needed in (("0.001", 1000), ("1e-05", 100000)):
                entry = result["tpr_at_fpr"][fpr]
                assert entry["tpr"] is None and f"600 non-member scores < {needed}" in entry["reason"]
            assert result["roc"]["fpr"][0] == 0.0 and result["roc"]["tpr"][-1] == 1.0
    synthetic = finished_run / "tiny" / "lira" / "synthetic" / "model-0"
    assert (synthetic / "lora.safetensors").is_file() and (synthetic / "synth" / "shard-00000.tar").is_file()
    assert Image.open(lira_dir / "roc.png").format == "PNG"
    assert "<svg" in (lira_dir / "roc.svg").read_text()
    assert (lira_dir / "roc.png.prov.json").is_file()


def headless_chromium():
    """Selenium driving headless Chromium (Debian chromium + chromium-driver), network off."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        # like the SLURM test's cluster: installed by the test itself (Debian packages, as root)
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("chromium and chromium-driver missing: run tests/report/install_chromium.sh as root")
        install = subprocess.run(["bash", str(REPO / "tests" / "report" / "install_chromium.sh")],
                                 capture_output=True, text=True, timeout=900)  # fmt: skip
        assert install.returncode == 0, install.stderr[-3000:]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def report_views(driver, url: str) -> tuple[dict[str, dict], list[dict]]:
    """Open every result of a Snakemake HTML report as a reader would (category, then its eye
    button): ``{path: {"category", "text" (visible), "content" (all), "tables"}}`` for HTML
    results, ``{"width"}`` (pixels of the loaded image) for figures; and the browser console's
    entries."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    categories = driver.execute_script("return categories")
    views, console = {}, driver.get_log("browser")
    for category, subcategories in categories.items():
        for index, path in enumerate(p for paths in subcategories.values() for p in paths):
            driver.get(url)
            if not driver.find_elements(By.LINK_TEXT, category):  # a lone category hides in "Results"
                driver.find_element(By.LINK_TEXT, "Results").click()
            for link in driver.find_elements(By.LINK_TEXT, category)[:1]:
                link.click()
            driver.find_elements(By.CSS_SELECTOR, "a[iconname=eye]")[index].click()
            view = {"category": category}
            if frames := driver.find_elements(By.TAG_NAME, "iframe"):
                driver.switch_to.frame(frames[0])
                view["text"] = driver.find_element(By.TAG_NAME, "body").text
                # all of it, folded <details> included (the provenance tree shows its top levels)
                view["content"] = driver.execute_script("return document.body.textContent")
                view["tables"] = len(driver.find_elements(By.TAG_NAME, "table"))
                driver.switch_to.default_content()
            widths = driver.execute_script(
                "return Array.from(document.images)"
                ".filter(i => i.src === results[arguments[0]].data_uri).map(i => i.naturalWidth)",
                path,
            )
            if widths:
                view["width"] = min(widths)
            console += driver.get_log("browser")
            views[path] = view
    return views, console


def test_report_renders_tables_figures_and_provenance_in_chromium(tiny_run, finished_run, tmp_path):
    """`snakemake tiny --report`: every result (tables, figures, provenance summaries) renders in
    headless Chromium, and the page logs no console error."""
    driver = headless_chromium()
    report = tmp_path / "report.html"
    run = tiny_run.snakemake("tiny", "--report", str(report))
    assert run.returncode == 0, run.stderr[-3000:]
    try:
        views, console = report_views(driver, report.as_uri())
    finally:
        driver.quit()
    assert [entry for entry in console if entry["level"] == "SEVERE"] == []
    table = views["results/tables/tiny.html"]
    assert table["category"] == "Tables" and table["tables"] == 1
    assert "tiny top1" in table["text"] and "\nx1 " in table["text"] and "\nreal " in table["text"]
    summary = views["results/tables/tiny.provenance.html"]
    assert summary["category"] == "Provenance"
    assert "results/tiny_real/metrics.json" in summary["text"] and "evaluate_classifier" in summary["text"]
    assert "results/tiny/index.parquet" in summary["content"]  # the lineage reaches the dataset index
    figures = {path: view for path, view in views.items() if path.endswith((".png", ".svg", ".jpg"))}
    assert figures, "rule tiny registers no figure in the report"
    assert all(view.get("width", 0) > 0 for view in figures.values()), figures


def browse_table_to_its_lineage(driver, table_page: Path, screenshot: Path) -> dict:
    """In ``driver``: open a table page as a file, follow its first cell's link to the provenance
    page, expand the cell's first source there, and save a screenshot. Returns what was seen."""
    from selenium.webdriver.common.by import By

    driver.set_window_size(1280, 900)
    driver.get(table_page.as_uri())
    link = driver.find_element(By.CSS_SELECTOR, "td a")
    number = link.text
    link.click()
    url = driver.current_url
    cell = driver.find_element(By.ID, url.partition("#")[2])
    source = cell.find_element(By.CSS_SELECTOR, ":scope > .inputs > details")
    closed_before = source.get_attribute("open") is None
    source.find_element(By.TAG_NAME, "summary").click()
    # an input is a line of its own, or (met before on the page) a link to where it is shown
    inputs = source.find_elements(
        By.CSS_SELECTOR, ":scope > .inputs > details > summary, :scope > .inputs > .again"
    )
    driver.save_screenshot(str(screenshot))
    return {
        "number": number,
        "url": url,
        "cell": cell.find_element(By.TAG_NAME, "summary").text,
        "cell_open": cell.get_attribute("open") is not None,
        "source": source.find_element(By.TAG_NAME, "summary").text,
        "closed_before": closed_before,
        "open_after": source.get_attribute("open") is not None,
        "inputs_shown": [s.text for s in inputs if s.is_displayed()],
        "console": driver.get_log("browser"),
    }


def test_table_cells_link_to_a_browsable_lineage_in_chromium(finished_run, tmp_path):
    """The tiny table's page and its provenance page, opened as files in headless Chromium: a cell's
    number leads to its lineage node, whose inputs unfold on a click (screenshot in tmp_path)."""
    driver = headless_chromium()
    try:
        seen = browse_table_to_its_lineage(
            driver, finished_run / "tables" / "tiny.html", tmp_path / "lineage.png"
        )
    finally:
        driver.quit()
    assert [entry for entry in seen["console"] if entry["level"] == "SEVERE"] == []
    assert seen["number"] and seen["url"].split("#")[0].endswith("/results/tables/tiny.provenance.html")
    assert seen["cell"].startswith("results/tables/tiny.csv[") and seen["cell_open"]
    assert "metrics.json" in seen["source"] and "rule evaluate_classifier" in seen["source"]
    assert seen["closed_before"] and seen["open_after"]
    assert any("results/tiny/index.parquet" in line for line in seen["inputs_shown"]), seen["inputs_shown"]
    assert (tmp_path / "lineage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
