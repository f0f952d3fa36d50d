"""Planning speed: every function of the workflow (the Snakefile and every file under rules/) has
its signature computed once (rules/common.smk: fixed_signature, fix_signatures), wherever it is
defined. Checked on the parsed workflow, in-process through Snakemake's API."""

from __future__ import annotations

import inspect
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    OutputSettings,
    ResourceSettings,
    StorageSettings,
)

REPO = Path(__file__).resolve().parents[2]


def workflow_functions() -> dict[str, object]:
    """The plain functions the Snakefile and rules/ define, from the parsed workflow's globals."""
    ours = (str(REPO / "rules"), str(REPO / "Snakefile"))
    with SnakemakeApi(OutputSettings()) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(),
            storage_settings=StorageSettings(),
            snakefile=REPO / "Snakefile",
            workdir=REPO,
        )
        workflow_api.dag(DAGSettings())  # parses the Snakefile and its includes
        namespace = workflow_api._workflow.globals
        return {
            name: value
            for name, value in namespace.items()
            if inspect.isfunction(value) and value.__code__.co_filename.startswith(ours)
        }


def test_every_function_of_every_rule_file_has_its_signature_fixed():
    functions = workflow_functions()
    files = {Path(f.__code__.co_filename).relative_to(REPO).as_posix() for f in functions.values()}
    # the helpers live next to their rules (rules/functions/<topic>.smk) as well as in common.smk
    assert {"rules/common.smk", "rules/functions/lira.smk", "rules/functions/figures.smk"} <= files
    missing = sorted(
        f"{Path(f.__code__.co_filename).relative_to(REPO)}: {name}"
        for name, f in functions.items()
        if not hasattr(f, FUNC_OVERWRITE_PARAMS_ATTR)
    )
    assert not missing, f"functions planned without a fixed signature: {missing}"
