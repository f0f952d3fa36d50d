"""The tiny default on a live one-node SLURM cluster, through the client's literal `--profile slurm`.

tests/slurm/start_cluster.sh brings the cluster up (installing SLURM with apt-get if needed); the
profile is installed as the user profile `slurm` with profiles/slurm/install.sh into a temporary
XDG_CONFIG_HOME. While the DAG runs, the LoRA job is cancelled with `scancel` right after its
first checkpoint: SLURM sends it SIGTERM, it saves and exits, Snakemake resubmits it (`retries`),
and the new job resumes from the checkpoint. The run must still complete, every job must have
gone through sbatch, and the artifacts must equal those of a local run of the same DAG.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
CLUSTER = REPO / "tests" / "slurm"
TARGET = "results/tiny_x1/metrics.json"  # the tiny counterpart of the client's results/in1k_x10/metrics.json
GROUP_SIZE = 3  # the tiny dataset has 3 shards: one SLURM job per sharded stage
GROUPS = ("embed_shards", "synthesize_shards")  # the tiny default has no captions (use_caption: false)
RUN_TIMEOUT_S = 1500

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    # the target goes first: list-valued options (--group-components) would swallow it
    return [str(SNAKEMAKE), TARGET, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--configfile", str(REPO / "config.yaml"), *args]  # fmt: skip


def slurm_jobs() -> dict[str, dict[str, str]]:
    """Every job slurmctld still remembers (MinJobAge=3600): id -> name, state, comment (rule)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%j|%T|%k"],
                         capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    rows = (line.split("|", 3) for line in out.splitlines() if line)
    return {jid: {"name": name, "state": state, "comment": comment} for jid, name, state, comment in rows}


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("starting a SLURM test cluster needs root (tests/slurm/start_cluster.sh)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("SLURM is not installed and apt-get is not available to install it")
    already_up = shutil.which("scontrol") and subprocess.run(["scontrol", "ping"], capture_output=True,
                                                             timeout=30).returncode == 0  # fmt: skip
    began = time.monotonic()
    start = subprocess.run(["bash", str(CLUSTER / "start_cluster.sh")], capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    print(f"SLURM test cluster bring-up: {time.monotonic() - began:.1f} s")
    if start.returncode in (2, 3):  # not root / no apt-get / this is a real cluster's node
        pytest.skip(f"no SLURM test cluster: {start.stderr.strip()}")
    assert start.returncode == 0, start.stderr
    yield
    if not already_up:
        subprocess.run(["bash", str(CLUSTER / "stop_cluster.sh")], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def local_run(tiny_run) -> Path:
    """The session's local run of the tiny default (tests/conftest.py), a superset of TARGET."""
    return tiny_run.work


@dataclass
class SlurmRun:
    workdir: Path
    log: str
    cancelled_job: str
    seconds: float


def log_tail(workdir: Path, chars: int = 5000) -> str:
    """The end of Snakemake's log and of every job log: what an assertion message should show."""
    logs = [workdir / "snakemake.log", *sorted(workdir.glob("results/logs/**/*.log"))]
    return "\n".join(f"== {path.relative_to(workdir)}\n{path.read_text(errors='replace')[-chars:]}"
                     for path in logs if path.is_file())  # fmt: skip


def cancel_lora_after_checkpoint(workdir: Path, proc: subprocess.Popen) -> str:
    """Wait for the LoRA job's first checkpoint, then `scancel` that SLURM job; its id."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not any(workdir.glob("results/tiny/lora/*/state/state.pt")):
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before the LoRA job wrote a checkpoint:\n"
                        + log_tail(workdir))  # fmt: skip
        assert time.monotonic() < deadline, "no LoRA checkpoint appeared"
        time.sleep(0.05)
    running = [jid for jid, job in slurm_jobs().items()
               if job["state"] == "RUNNING" and job["comment"].startswith("rule_finetune_lora")]  # fmt: skip
    assert len(running) == 1, slurm_jobs()
    subprocess.run(["scancel", running[0]], check=True, timeout=60)
    return running[0]


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory, seed_world) -> SlurmRun:
    workdir = tmp_path_factory.mktemp("slurm")
    seed_world(workdir)  # the pretrained tiny zoo of the session (tests/conftest.py)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("xdg"))}
    install = subprocess.run(["bash", str(REPO / "profiles" / "slurm" / "install.sh")], env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert install.returncode == 0, install.stderr
    cmd = snakemake_cmd(workdir, "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "2",
                        "--group-components", *(f"{group}={GROUP_SIZE}" for group in GROUPS))  # fmt: skip
    log_path = workdir / "snakemake.log"
    start = time.monotonic()
    with log_path.open("w") as log:
        # a stuck Snakemake ignores SIGTERM: stop it with SIGINT (then SIGKILL)
        proc = subprocess.Popen(["timeout", "-s", "INT", "-k", "60", str(RUN_TIMEOUT_S), *cmd],
                                env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            cancelled = cancel_lora_after_checkpoint(workdir, proc)
        finally:
            returncode = proc.wait()
    seconds = time.monotonic() - start
    print(f"SLURM run of the tiny DAG: {seconds:.0f} s")
    text = log_path.read_text()
    assert returncode == 0, text[-5000:]
    return SlurmRun(workdir, text, cancelled, seconds)


def run_jobs(run: SlurmRun) -> dict[str, dict[str, str]]:
    """The SLURM jobs of this run: those named like the cancelled one (the plugin's run uuid)."""
    jobs = slurm_jobs()
    name = jobs[run.cancelled_job]["name"]
    return {jid: job for jid, job in jobs.items() if job["name"] == name}


def test_every_job_went_through_sbatch(slurm_run):
    jobs = run_jobs(slurm_run)
    for jid in jobs:
        assert f"SLURM jobid {jid} " in slurm_run.log
    by_rule = {}
    for job in jobs.values():
        by_rule.setdefault(job["comment"].split("_wildcards")[0], []).append(job["state"])
    # 12 Snakemake jobs (the pretrained zoo is seeded), 2 groups of 3 shards -> 8 SLURM jobs, + 1
    # for the resubmitted LoRA job
    assert len(jobs) == 9, by_rule
    assert sorted(by_rule["rule_finetune_lora"]) == ["CANCELLED", "COMPLETED"], by_rule
    for group in GROUPS:
        assert len([r for r in by_rule if r.startswith(f"rule_{group}")]) == 1, by_rule
    others = [s for rule, states in by_rule.items() if rule != "rule_finetune_lora" for s in states]
    assert set(others) == {"COMPLETED"}, by_rule


def test_provenance_names_the_slurm_jobs(slurm_run):
    jobs = run_jobs(slurm_run)
    records = [json.loads(p.read_text()) for p in (slurm_run.workdir / "results").rglob("*.prov.json")]
    # the pretrained zoo and its corpus were seeded from the session's local build (tests/conftest.py)
    seeded = ("results/zoo/", "results/data/tiny-corpus")
    records = [r for r in records if not r["artifact"].startswith(seeded)]
    job_ids = {r["job"].get("slurm_job_id") for r in records if "job" in r}
    assert records and job_ids and job_ids <= set(jobs), (job_ids, set(jobs))


def test_cancelled_lora_job_resumed_from_its_checkpoint(slurm_run):
    assert slurm_jobs()[slurm_run.cancelled_job]["state"] == "CANCELLED"
    (log,) = (slurm_run.workdir / "results" / "logs" / "finetune_lora" / "tiny").glob("*.log")
    summary = json.loads(log.read_text().strip().splitlines()[-1])
    assert 0 < summary["resumed_from"] < summary["steps"], summary


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


BYTE_STABLE = (
    "results/tiny/index.parquet",
    "results/tiny/synth/*/pass-0/shard-*.tar",
)


@pytest.mark.parametrize("pattern", BYTE_STABLE)
def test_artifacts_equal_the_local_run(slurm_run, local_run, pattern):
    local = sorted(p.relative_to(local_run) for p in local_run.glob(pattern))
    assert local and local == sorted(
        p.relative_to(slurm_run.workdir) for p in slurm_run.workdir.glob(pattern)
    )
    for rel in local:
        assert sha256(slurm_run.workdir / rel) == sha256(local_run / rel), rel


def test_resumed_lora_equals_the_local_run(slurm_run, local_run):
    """safetensors orders its header at random: compare the tensors, not the bytes."""
    import torch
    from safetensors.torch import load_file

    (local,) = local_run.glob("results/tiny/lora/*/lora.safetensors")
    local_tensors = load_file(local)
    slurm_tensors = load_file(slurm_run.workdir / local.relative_to(local_run))
    assert local_tensors.keys() == slurm_tensors.keys()
    for key, tensor in local_tensors.items():
        assert torch.equal(tensor, slurm_tensors[key]), key


def test_preflight_checks_a_profile_against_the_live_cluster(cluster, tmp_path):
    """``realfake preflight --profile``: the test cluster's partition passes, a missing one is a ✗
    naming the rule, before anything is submitted."""
    import yaml

    from realfake import preflight

    def profile(partition: str) -> Path:
        folder = tmp_path / partition
        folder.mkdir()
        config = {"executor": "slurm", "default-resources": [f"slurm_partition={partition}"]}
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        return folder

    (good,) = preflight.check_slurm(profile("debug"), ["synthesize_shard"])
    assert good.status == "✓", good
    (bad,) = preflight.check_slurm(profile("no-such-part"), ["synthesize_shard"])
    assert bad.status == "✗" and bad.what == "slurm_partition=no-such-part (synthesize_shard)"
    assert bad.detail.startswith("no such partition")


TRAIN = "rule_train_classifier"  # the SLURM job comment of a classifier training job


def kill_strays(workdir: Path) -> list[int]:
    """Kill the processes of a run in ``workdir`` that outlived it; their pids. On the node loss the
    first attempt's batch shell dies at once, its job-step Snakemake is left to init, where the test
    cluster's process tracking by parentage (no cgroups) no longer finds it, and Snakemake 9 can
    deadlock in its own SIGTERM shutdown: it would stay forever. A real cluster's cgroups end it."""
    strays = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(workdir).encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), 9)
                strays.append(int(entry.name))
        except OSError:
            continue
    return strays


def node_name() -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, check=True,
                          timeout=60).stdout.split()[0]  # fmt: skip


def test_a_lost_node_requeues_the_running_job_and_the_dag_ends_with_the_same_classifier(slurm_run):
    """The node is taken down (``scontrol update state=down``) while a classifier trains on it, after
    its first logged steps: SLURM kills the job (SIGTERM: the trainer saves its state) and requeues
    it (the profile's ``slurm-requeue``); the node comes back (``state=resume``, or by itself with
    ReturnToService=2), the requeued job resumes from the state, and Snakemake, which only saw the
    job pending again, ends with the classifier of the undisturbed run, byte for byte."""
    workdir, node = slurm_run.workdir, node_name()
    target = "results/tiny_x1/classifier.safetensors"
    cmd = [str(SNAKEMAKE), target, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(REPO / "config.yaml"), "--profile", str(REPO / "profiles" / "slurm"),
           "--slurm-init-seconds-before-status-checks", "2", "--forcerun", "train_classifier"]  # fmt: skip
    log_path, steps = (
        workdir / "lost-node.log",
        workdir / "results" / "tiny_x1" / "train_state" / "train_log.jsonl",
    )
    undisturbed = (workdir / target).read_bytes()
    steps.unlink()  # the finished run's log: the rerun starts a fresh one
    with log_path.open("w") as log:
        proc = subprocess.Popen(["timeout", "-s", "INT", "-k", "60", str(RUN_TIMEOUT_S), *cmd],
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while not (steps.is_file() and len(steps.read_text().splitlines()) >= 3):
                assert proc.poll() is None, log_path.read_text()[-5000:]
                assert time.monotonic() < deadline, "the classifier job logged no steps"
                time.sleep(0.05)
            (running,) = [jid for jid, job in slurm_jobs().items()
                          if job["state"] == "RUNNING" and job["comment"].startswith(TRAIN)]  # fmt: skip
            down = ["scontrol", "update", f"nodename={node}", "state=down", "reason=realfake-lost-node"]
            subprocess.run(down, check=True, timeout=60)
            while slurm_jobs()[running]["state"] == "RUNNING":
                time.sleep(0.2)
            # ReturnToService=2 may have returned the node already: then "Invalid node state"
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], timeout=60)
        finally:
            returncode = proc.wait()
            strays = kill_strays(workdir)
    assert returncode == 0, log_path.read_text()[-5000:] + log_tail(workdir)
    print(f"processes of the lost attempt killed after the run: {strays}")
    shown = subprocess.run(["scontrol", "show", "job", running], capture_output=True, text=True, check=True,
                           timeout=60).stdout  # fmt: skip
    assert "Restarts=1" in shown and "JobState=COMPLETED" in shown, shown
    assert (workdir / target).read_bytes() == undisturbed
