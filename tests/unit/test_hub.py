"""``realfake models fetch`` against a hub served on the loopback interface by the test itself.

The fake hub answers what huggingface_hub's ``snapshot_download`` asks (model info, the recursive
tree listing, HEAD/GET of ``/{repo}/resolve/{revision}/{file}`` with ETag, X-Repo-Commit and ranges)
for a repository laid out as the real SD-1.5 one: the tiny zoo's pipeline plus the duplicate weight
formats the real repository holds, which the shipped ``allow_patterns`` must skip. Then the loaders
load it by hub id with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from realfake import hub
from realfake.config import ConfigError, validate

REPO = Path(__file__).resolve().parents[2]
SD = "stable-diffusion-v1-5/stable-diffusion-v1-5"
COMMIT = hashlib.sha1(b"the pinned commit").hexdigest()
SSCD_URL_PATH = "/sscd-copy-detection/sscd_disc_large.torchscript.pt"
SSCD_BYTES = bytes(range(256)) * 1200  # 300 kB
SSCD_SHA256 = hashlib.sha256(SSCD_BYTES).hexdigest()
#: Files of the real SD-1.5 repository that the pipeline never reads (other formats, the unused
#: safety checker, the single-file checkpoints): fetching any of them is a failure.
DECOYS = (
    ".gitattributes",
    "README.md",
    "v1-inference.yaml",
    "v1-5-pruned.ckpt",
    "v1-5-pruned-emaonly.safetensors",
    "safety_checker/config.json",
    "safety_checker/model.safetensors",
    "safety_checker/pytorch_model.bin",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/pytorch_model.bin",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "vae/diffusion_pytorch_model.bin",
    "vae/diffusion_pytorch_model.fp16.safetensors",
)
UNET = "unet/diffusion_pytorch_model.safetensors"


@dataclass
class FakeHub:
    """Repositories at one commit each and plain files by URL path, served over HTTP; every
    request is logged as (method, path, Range header)."""

    repos: dict[str, dict[str, bytes]]
    files: dict[str, bytes]
    url: str = ""
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    #: URL path -> bytes sent before the connection is dropped, on the first full GET only
    cut: dict[str, int] = field(default_factory=dict)

    def file_gets(self) -> list[tuple[str, str | None]]:
        """(path, range) of the GETs of file bodies (hub files and plain files)."""
        return [(p, r) for m, p, r in self.log if m == "GET" and not p.startswith("/api/")]


def make_handler(fake: FakeHub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the log is fake.log
            pass

        def do_HEAD(self) -> None:
            self.answer(body=False)

        def do_GET(self) -> None:
            self.answer(body=True)

        def answer(self, body: bool) -> None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            fake.log.append((self.command, path, self.headers.get("Range")))
            if path.startswith("/api/models/"):
                return self.api(path.removeprefix("/api/models/"))
            for repo_id, files in fake.repos.items():
                head, _, name = path.removeprefix(f"/{repo_id}/resolve/").partition("/")
                if path.startswith(f"/{repo_id}/resolve/") and head in (COMMIT, "main") and name in files:
                    return self.send_file(path, files[name], body, {"X-Repo-Commit": COMMIT})
            if path in fake.files:
                return self.send_file(path, fake.files[path], body, {})
            self.send_json({"error": "not found"}, 404)

        def api(self, rest: str) -> None:
            """``{repo}/revision/{rev}`` (model info) and ``{repo}/tree/{rev}`` (the listing)."""
            for repo_id, files in fake.repos.items():
                kind, _, revision = rest.removeprefix(f"{repo_id}/").partition("/")
                if not rest.startswith(f"{repo_id}/") or revision not in (COMMIT, "main"):
                    continue
                if kind == "revision":
                    siblings = [{"rfilename": name} for name in sorted(files)]
                    return self.send_json({"id": repo_id, "sha": COMMIT, "siblings": siblings})
                if kind == "tree":
                    tree = [
                        {
                            "type": "file",
                            "path": name,
                            "size": len(data),
                            "oid": hashlib.sha1(data).hexdigest(),
                        }
                        for name, data in sorted(files.items())
                    ]
                    return self.send_json(tree)
            self.send_json({"error": "Repository not found"}, 404)

        def send_json(self, obj, status: int = 200) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def send_file(self, path: str, data: bytes, body: bool, headers: dict[str, str]) -> None:
            start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers["Range"] else 0
            self.send_response(206 if start else 200)
            for name, value in {**headers, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}.items():
                self.send_header(name, value)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            if not start and path in fake.cut:  # the server dies mid-file: send part, drop the connection
                self.wfile.write(data[: fake.cut.pop(path)])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data[start:])

    return Handler


@pytest.fixture(scope="module")
def sd_repo(tiny_zoo) -> dict[str, bytes]:
    """The files of a fake SD-1.5 repository: the tiny zoo's pipeline, its model_index.json listing
    a feature extractor and a safety checker as the real one does, and the decoys."""
    from transformers import CLIPImageProcessor

    folder = tiny_zoo / "sd"
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    index = json.loads(files["model_index.json"])
    index.update(
        feature_extractor=["transformers", "CLIPImageProcessor"],
        safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
    )
    files["model_index.json"] = json.dumps(index, indent=2).encode()
    files["feature_extractor/preprocessor_config.json"] = CLIPImageProcessor().to_json_string().encode()
    assert not set(DECOYS) & set(files)
    return {**files, **{name: b"not for the pipeline: " + name.encode() for name in DECOYS}}


@pytest.fixture()
def fake_hub(sd_repo):
    fake = FakeHub(repos={SD: sd_repo}, files={SSCD_URL_PATH: SSCD_BYTES})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


def reload_hub_constants() -> None:
    """huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE into
    ``huggingface_hub.constants`` when imported, and its functions read them from there."""
    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)


@pytest.fixture()
def online(monkeypatch, tmp_path, fake_hub):
    """A login node: the hub reachable (at the fake), the cache under HF_HOME in ``tmp_path``."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    reload_hub_constants()
    yield tmp_path / "hf" / "hub"
    monkeypatch.undo()
    reload_hub_constants()


def go_offline(monkeypatch) -> None:
    """A compute node: HF_HUB_OFFLINE=1, as every job sets it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reload_hub_constants()


def fetch_config(
    tmp_path: Path,
    fake_hub: FakeHub,
    *,
    sd_revision: str | None = COMMIT,
    sscd_sha256: str | None = SSCD_SHA256,
) -> Path:
    """config.yaml with the shipped SD source (its allow_patterns) pinned to the fake commit, the
    SSCD file served by the fake and written under ``tmp_path``, BLIP-2 and CLIP local folders."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    paper = config["models"]["paper"]
    (tmp_path / "local-model").mkdir(exist_ok=True)
    paper["blip2"] = paper["clip"] = str(tmp_path / "local-model")
    paper["sscd"] = str(tmp_path / "models" / "sscd" / "sscd_disc_large.torchscript.pt")
    sd_source = {**config["model_sources"][SD], "revision": sd_revision}
    config["model_sources"] = {
        SD: sd_source,
        paper["sscd"]: {"url": fake_hub.url + SSCD_URL_PATH, "sha256": sscd_sha256},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snapshot(cache: Path, commit: str = COMMIT) -> Path:
    return cache / f"models--{SD.replace('/', '--')}" / "snapshots" / commit


def cached_files(cache: Path) -> set[str]:
    folder = snapshot(cache)
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_fetch_gets_exactly_the_pinned_files_then_the_loaders_use_them_offline(
    tmp_path, fake_hub, online, capsys, monkeypatch
):
    hub.main(["fetch", "--configfile", str(fetch_config(tmp_path, fake_hub))])
    needed = set(fake_hub.repos[SD]) - set(DECOYS)
    assert cached_files(online) == needed
    requested = {path for _, path, _ in fake_hub.log}
    assert not [d for d in DECOYS if any(p.endswith("/" + d) for p in requested)]
    assert all(f"/resolve/{COMMIT}/" in p for p, _ in fake_hub.file_gets() if p != SSCD_URL_PATH)
    storage = snapshot(online).parents[1]
    assert (storage / "refs" / "main").read_text() == COMMIT  # what the loaders resolve offline
    assert "fetched" in capsys.readouterr().out

    go_offline(monkeypatch)
    before = len(fake_hub.log)
    from realfake.models import load_sd_pipeline

    pipe = load_sd_pipeline(SD)
    assert pipe.unet.config.cross_attention_dim == 32  # the tiny zoo's, by hub id from the cache
    assert pipe.feature_extractor is not None and pipe.safety_checker is None
    assert len(fake_hub.log) == before
    from realfake.provenance import describe_input

    # a stage's provenance record names the hub model with the commit it loaded
    assert describe_input("--model", SD) == {"flag": "--model", "ref": SD, "type": "hub", "revision": COMMIT}


def test_second_run_fetches_nothing_and_says_so(tmp_path, fake_hub, online, capsys):
    config = fetch_config(tmp_path, fake_hub)
    hub.main(["fetch", "--configfile", str(config)])
    capsys.readouterr()
    fake_hub.log.clear()
    hub.main(["fetch", "--configfile", str(config)])
    out = capsys.readouterr().out
    assert fake_hub.log == []  # not even a HEAD: the tree listing and the files are cached
    assert "complete in the cache" in out and "nothing fetched" in out
    assert "complete (sha256 verified): nothing fetched" in out


def test_download_resumes_after_the_server_dies_mid_file(tmp_path, fake_hub, online, monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub resumes from the last whole chunk it wrote (10 MB): smaller ones for tiny files
    chunk = 1 << 16
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    path = f"/{SD}/resolve/{COMMIT}/{UNET}"
    cut_at = 15 * chunk
    fake_hub.cut = {path: cut_at, SSCD_URL_PATH: 100_000}
    hub.main(["fetch", "--configfile", str(fetch_config(tmp_path, fake_hub))])
    assert not fake_hub.cut  # both connections were dropped once
    gets = [r for p, r in fake_hub.file_gets() if p == path]
    assert gets == [None, f"bytes={cut_at}-"]  # resumed where it stopped, not restarted
    assert (snapshot(online) / UNET).read_bytes() == fake_hub.repos[SD][UNET]
    assert [r for p, r in fake_hub.file_gets() if p == SSCD_URL_PATH] == [None, "bytes=100000-"]
    sscd = tmp_path / "models" / "sscd" / "sscd_disc_large.torchscript.pt"
    assert sscd.read_bytes() == SSCD_BYTES


def test_url_file_with_a_wrong_sha256_is_an_error_naming_the_key_and_leaves_nothing(
    tmp_path, fake_hub, online
):
    config = fetch_config(tmp_path, fake_hub, sscd_sha256="0" * 64)
    sscd = tmp_path / "models" / "sscd" / "sscd_disc_large.torchscript.pt"
    with pytest.raises(SystemExit) as err:
        hub.main(["fetch", "--configfile", str(config)])
    assert f"model_sources.{sscd}.sha256" in str(err.value)
    assert SSCD_SHA256 in str(err.value)
    assert list(sscd.parent.iterdir()) == []  # neither the final name nor the partial download


def test_unpinned_sources_are_refused_unless_allowed_then_their_pins_printed(
    tmp_path, fake_hub, online, capsys
):
    config = fetch_config(tmp_path, fake_hub, sd_revision=None, sscd_sha256=None)
    with pytest.raises(SystemExit, match=f"model_sources.{SD}.revision is null"):
        hub.main(["fetch", "--configfile", str(config)])
    assert fake_hub.file_gets() == []
    hub.main(["fetch", "--configfile", str(config), "--allow-unpinned"])
    out = capsys.readouterr().out
    assert f"model_sources.{SD}.revision: {COMMIT}" in out
    sscd = tmp_path / "models" / "sscd" / "sscd_disc_large.torchscript.pt"
    assert f"model_sources.{sscd}.sha256: {SSCD_SHA256}" in out
    assert (snapshot(online).parents[1] / "refs" / "main").read_text() == COMMIT


def test_dry_run_prints_the_plan_and_fetches_nothing(tmp_path, fake_hub, online, capsys):
    hub.main(["fetch", "--configfile", str(fetch_config(tmp_path, fake_hub)), "--dry-run"])
    out = capsys.readouterr().out
    assert f"models.paper.sd: {SD} @ {COMMIT}" in out and "unet/config.json" in out
    assert str(online) in out and fake_hub.url + SSCD_URL_PATH in out
    assert f"would fetch {len(set(fake_hub.repos[SD]) - set(DECOYS))} " in out
    assert fake_hub.file_gets() == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "config.yaml"]


def test_fetch_refuses_to_run_offline(tmp_path, fake_hub, online, monkeypatch):
    config = fetch_config(tmp_path, fake_hub)
    go_offline(monkeypatch)
    with pytest.raises(SystemExit, match="HF_HUB_OFFLINE"):
        hub.main(["fetch", "--configfile", str(config)])
    assert fake_hub.log == []


def shipped_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_plan_of_the_shipped_sets():
    config = shipped_config()
    plan = hub.plan_sources(config, ["paper", "tiny"])
    kinds = {item.key: type(item).__name__ for item in plan}
    assert kinds == {
        "models.paper.sd": "HubSource",
        "models.paper.blip2": "HubSource",
        "models.paper.clip": "HubSource",
        "models.paper.sscd": "FileSource",
        "models.tiny.sd": "LocalRef",
        "models.tiny.blip2": "LocalRef",
        "models.tiny.clip": "LocalRef",
        "models.tiny.sscd": "LocalRef",
    }
    sd = plan[0]
    assert (
        sd.repo_id == SD
        and len(sd.revision) == 40
        and "unet/diffusion_pytorch_model.safetensors" in sd.allow_patterns
    )


def test_a_hub_model_without_a_source_is_an_error_naming_its_key():
    config = shipped_config()
    config["models"]["paper"]["clip"] = "openai/clip-vit-base-patch32"
    with pytest.raises(
        hub.FetchError, match="models.paper.clip: hub model 'openai/clip-vit-base-patch32' has no"
    ):
        hub.plan_sources(config, ["paper"])


def test_a_local_path_without_a_source_is_not_fetched():
    config = shipped_config()
    config["models"]["paper"]["sscd"] = "/elsewhere/sscd.pt"
    plan = hub.plan_sources(config, ["paper"])
    assert plan[-1] == hub.LocalRef("models.paper.sscd", Path("/elsewhere/sscd.pt"))
    assert "nothing to fetch" in hub.describe(plan[-1])


def test_a_hub_source_for_a_local_path_and_an_unknown_set_are_errors():
    config = shipped_config()
    config["model_sources"]["/models/sscd/sscd_disc_large.torchscript.pt"] = {
        "revision": None,
        "allow_patterns": ["*"],
    }
    with pytest.raises(hub.FetchError, match="model_sources./models/sscd/.*is not a hub id"):
        hub.plan_sources(config, ["paper"])
    with pytest.raises(
        hub.FetchError, match="--models: no model set 'nope' under models: .known: paper, tiny"
    ):
        hub.plan_sources(config, ["nope"])


def test_a_source_no_model_set_uses_is_a_config_error():
    config = shipped_config()
    config["model_sources"]["openai/clip-vit-large-patch13"] = config["model_sources"].pop(
        "openai/clip-vit-large-patch14"
    )
    with pytest.raises(ConfigError, match="model_sources.openai/clip-vit-large-patch13: no model set uses"):
        validate(config, REPO / "config.yaml")
    del config["model_sources"]
    validate(config)  # optional: older configs stay valid
