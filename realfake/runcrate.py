"""A lineage as a Workflow Run RO-Crate of the Provenance Run Crate profile (``--ro-crate OUT``).

Mapping (https://www.researchobject.org/workflow-run-crate/profiles/provenance_run_crate):
the Snakefile is the main ``ComputationalWorkflow`` (also a ``HowTo``) whose ``step`` are one
``HowToStep`` per rule, each with ``workExample`` the stage's tool (``SoftwareApplication``
``realfake.<module>``, ``softwareVersion`` its code hash). Every job on the lineage is a
``CreateAction`` (``instrument`` the tool, ``object`` its input files, model references and
parameter values, ``result`` its output, start/end times) and a ``ControlAction`` links it to its
step. One ``OrganizeAction`` (``instrument`` Snakemake) groups the control actions and has as
``result`` the workflow run ``CreateAction`` (``instrument`` the workflow, ``object`` the lineage's
sources, ``result`` the artifact asked about).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rocrate.model.contextentity import ContextEntity
from rocrate.rocrate import ROCrate

from realfake import provenance as prov
from realfake.lineage import Lineage, Node, rule_of, walk

WFRUN = "https://w3id.org/ro/wfrun"
PROFILES = (
    f"{WFRUN}/process/0.5",
    f"{WFRUN}/workflow/0.5",
    f"{WFRUN}/provenance/0.5",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
)
WFRUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run/context"
SNAKEFILE = prov.PACKAGE_DIR.parent / "Snakefile"


def crate_path(key: str) -> str:
    """The crate-relative id of a lineage node (absolute paths lose their leading slash)."""
    return key.lstrip("/")


def data_entity(crate: ROCrate, node: Node, with_data: bool):
    """The ``File``/``Dataset`` of a node (a web ``Dataset`` for a hub model), created once."""
    if node.kind == "hub":
        ref = node.key.removeprefix("hub:")
        url = f"https://huggingface.co/{ref}/"
        props = {"name": ref, "@type": "Dataset", "version": node.sha256}
        return crate.get(url) or crate.add_dataset(url, properties=props)
    dest = crate_path(node.key)
    existing = crate.get(dest) or crate.get(dest + "/")
    if existing is not None:
        return existing
    source = node.path if with_data and node.path.exists() else None
    props: dict[str, Any] = {"name": node.path.name}
    if node.sha256:
        props["sha256"] = node.sha256
    if node.path.is_dir():
        return crate.add_dataset(source, dest_path=dest, properties=props)
    if node.path.is_file():
        props["contentSize"] = str(node.path.stat().st_size)
    return crate.add_file(source, dest_path=dest, properties=props)


def tool_entity(crate: ROCrate, record: dict[str, Any]) -> ContextEntity:
    """The ``SoftwareApplication`` of a stage (``#tool-<stage>``) with its parameters as
    ``FormalParameter`` inputs."""
    ident = "#tool-" + record["stage"].replace(" ", "-")
    tool = crate.get(ident)
    if tool is None:
        tool = crate.add(
            ContextEntity(
                crate,
                ident,
                properties={
                    "@type": "SoftwareApplication",
                    "name": f"realfake.{record['stage']}",
                    "softwareVersion": record["code"]["hash"],
                },
            )
        )
        crate.mainEntity.append_to("hasPart", tool)
    known = {p.id for p in tool.get("input", []) or []}
    for name in record["params"]:
        pid = f"{ident}-param-{name}"
        if pid not in known:
            param = crate.add(
                ContextEntity(
                    crate,
                    pid,
                    properties={
                        "@type": "FormalParameter",
                        "name": name,
                        "additionalType": "Text",
                        "conformsTo": {"@id": "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"},
                    },
                )
            )
            tool.append_to("input", param)
            known.add(pid)
    return tool


def step_entity(crate: ROCrate, workflow, record: dict[str, Any], tool) -> ContextEntity:
    rule = rule_of(record).replace(" ", "_")
    ident = f"#step-{rule}"
    step = crate.get(ident)
    if step is None:
        position = len(workflow.get("step", []) or [])
        step = crate.add(
            ContextEntity(
                crate,
                ident,
                properties={
                    "@type": "HowToStep",
                    "name": rule,
                    "position": str(position),
                },
            )
        )
        step["workExample"] = tool
        workflow.append_to("step", step)
    return step


def job_action(crate: ROCrate, n: int, nodes: list[Node], with_data: bool, workflow):
    """The ``CreateAction`` of the job that wrote ``nodes`` (its output, or the parts of its output
    directory on the lineage, e.g. the zoo's ``sd`` and ``clip``) and its ``ControlAction``."""
    node, record = nodes[0], nodes[0].record
    tool = tool_entity(crate, record)
    values = [
        crate.add(
            ContextEntity(
                crate,
                f"#job-{n}-param-{name}",
                properties={
                    "@type": "PropertyValue",
                    "name": name,
                    "value": str(value),
                    "exampleOfWork": {"@id": f"{tool.id}-param-{name}"},
                },
            )
        )
        for name, value in record["params"].items()
    ]
    inputs = [data_entity(crate, e.node, with_data) for e in node.inputs]
    job = record["job"]
    action = crate.add_action(
        tool,
        identifier=f"#job-{n}",
        object=inputs + values,
        result=[data_entity(crate, part, with_data) for part in nodes],
        properties={
            "@type": "CreateAction",
            "name": f"{record['stage']} -> {record['artifact']}",
            "startTime": record["started"],
            "endTime": record["ended"],
            "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"},
            "description": " ".join(record["command"]),
            "identifier": job.get("slurm_job_id") or f"{record['host']['hostname']}:{job['pid']}",
        },
    )
    control = crate.add(ContextEntity(crate, f"#control-{n}", properties={"@type": "ControlAction"}))
    control["instrument"] = step_entity(crate, workflow, record, tool)
    control["object"] = action
    return action, control


def engine_version() -> str | None:
    try:
        return version("snakemake")
    except PackageNotFoundError:
        return None


def write_crate(root: Node, lineage: Lineage, out: Path, with_data: bool = True) -> Path:
    """Write the lineage of ``root`` as a Provenance Run Crate directory ``out``; returns ``out``.

    ``with_data`` copies every file of the lineage into the crate (a self-contained deposit); without
    it the crate lists them by path, size and sha256 only (for lineages of terabytes).
    """
    crate = ROCrate(version="1.1")
    crate.metadata.extra_contexts.append(WFRUN_CONTEXT)
    crate.name = f"realfake lineage of {root.key}"
    crate.description = "Provenance of a realfake (Real-Fake, ICLR 2024) result: every job from the sources."
    crate.license = "https://spdx.org/licenses/MIT"
    workflow = crate.add_workflow(
        SNAKEFILE,
        dest_path="Snakefile",
        main=True,
        lang="snakemake",
        properties={
            "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
            "name": "realfake",
        },
    )
    crate.root_dataset["conformsTo"] = [{"@id": p} for p in PROFILES]
    engine = crate.add(
        ContextEntity(
            crate,
            "#snakemake",
            properties={
                "@type": "SoftwareApplication",
                "name": "Snakemake",
                "url": "https://snakemake.github.io",
                "softwareVersion": engine_version(),
            },
        )
    )
    jobs: dict[int, list[Node]] = {}  # one job per record, sources first
    for node in reversed(walk(root)):
        if node.record is not None:
            jobs.setdefault(id(node.record), []).append(node)
    actions, controls = [], []
    for n, nodes in enumerate(jobs.values()):
        action, control = job_action(crate, n, nodes, with_data, workflow)
        actions.append(action)
        controls.append(control)
    sources = [data_entity(crate, n, with_data) for n in walk(root) if n.kind in {"source", "hub"}]
    results = [data_entity(crate, root, with_data)] if root.path is not None and root.kind != "cell" else []
    if root.kind == "cell":
        results = [data_entity(crate, e.node, with_data) for e in root.inputs]
    run = crate.add_action(
        workflow,
        identifier="#workflow-run",
        object=sources,
        result=results,
        properties={
            "@type": "CreateAction",
            "name": f"realfake run producing {root.key}",
            "startTime": min((a["startTime"] for a in actions), default=None),
            "endTime": max((a["endTime"] for a in actions), default=None),
        },
    )
    crate.add_action(
        engine,
        identifier="#engine-run",
        object=controls,
        result=[run],
        properties={"@type": "OrganizeAction", "name": "Snakemake run"},
    )
    crate.write(out)
    return out
