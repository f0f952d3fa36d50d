"""Config validation at DAG start: JSON schema plus cross-references, errors naming key and line.

Used by ``rules/common.smk`` before any rule runs, so a typo costs seconds, not GPU hours.
"""

from __future__ import annotations

import inspect
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from realfake.targets import Choices, TargetError, table_cells

#: (dataset key, section it names) pairs that must resolve.
DATASET_REFS = {"models": "models", "finetune": "finetune", "synthesis": "synthesis", "recipe": "recipes"}


class ConfigError(ValueError):
    """One or more problems in the configuration, each naming its key (and line when known)."""


def load_schema() -> dict:
    """The packaged JSON schema (``realfake/config.schema.yaml``)."""
    text = resources.files("realfake").joinpath("config.schema.yaml").read_text()
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: every DAG start


def key_lines(text: str) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, key.value)
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                lines[(*path, i)] = value.start_mark.line + 1
                walk(value, (*path, i))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _where(path: tuple, lines: dict[tuple, int], source: str) -> str:
    dotted = ".".join(str(p) for p in path) or "<top level>"
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return f"{source}:{lines[path[:cut]]}: {dotted}"
    return f"{source}: {dotted}"


def find_errors(config: dict[str, Any], schema: dict) -> list[tuple[tuple, str]]:
    """(key path, message) for every schema violation and dangling cross-reference."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = [(tuple(e.absolute_path), e.message) for e in validator.iter_errors(config)]
    if errors:
        return sorted(errors, key=lambda e: [str(p) for p in e[0]])
    for name, dataset in config["datasets"].items():
        for key, section in DATASET_REFS.items():
            if dataset[key] not in config[section]:
                known = ", ".join(sorted(config[section]))
                errors.append(
                    (
                        (("datasets", name, key)),
                        f"{dataset[key]!r} is not defined under {section}: (known: {known})",
                    )
                )
        if dataset["models"] not in config["inference"]:
            errors.append(
                ((("datasets", name, "models")), f"no inference: settings named {dataset['models']!r}")
            )
        errors += layout_option_errors(name, dataset)
    for name, variant in config["variants"].items():
        needs = [k for k in ("visual_guidance", "mmd") if variant[k]]
        if needs and not variant["finetune"]:
            message = f"{' and '.join(needs)} only work with finetune: true (App. G.5)"
            errors.append((("variants", name), message))
        for option, default, needs_key in (
            ("mmd_kind", "mean", "mmd"),
            ("guidance_source", "class_mean", "visual_guidance"),
        ):
            if variant.get(option, default) != default and not variant[needs_key]:
                message = f"{option}: {variant[option]} needs {needs_key}: true"
                errors.append((("variants", name, option), message))
    errors += lira_errors(config, schema)
    errors += ood_figure_errors(config)
    errors += model_source_errors(config)
    choices = Choices.from_config(config)
    for name, table in config["experiment"]["tables"].items():
        if table.get("source") == "ood" and not table.get("dataset"):
            errors.append((("experiment", "tables", name), "source: ood needs dataset: (whose classifiers)"))
            continue
        try:
            table_cells(table, choices)
        except TargetError as err:
            errors.append((("experiment", "tables", name), str(err)))
    for key in ("tables", "toy_tables"):
        for name in config["tiny"].get(key, []):
            if name not in config["experiment"]["tables"]:
                errors.append((("tiny", key), f"{name!r} is not a table under experiment.tables"))
    return errors


def ood_figure_errors(config: dict[str, Any]) -> list[tuple[tuple, str]]:
    """OOD sets or figures naming an unknown dataset, variant or scale."""
    datasets, known = config["datasets"], ", ".join(config["datasets"])
    errors = [
        (("ood", name), f"no dataset {name!r} (known: {known})")
        for name in config.get("ood", {})
        if name not in datasets
    ]
    fig1 = config.get("figures", {}).get("fig1", {})
    errors += [
        (("figures", "fig1", "datasets", i), f"no dataset {name!r} (known: {known})")
        for i, name in enumerate(fig1.get("datasets", []))
        if name not in datasets
    ]
    baseline = fig1.get("baseline", "base")
    if fig1 and baseline not in config["variants"]:
        errors.append((("figures", "fig1", "baseline"), f"no variant {baseline!r}"))
    for name, fig2 in config.get("figures", {}).get("fig2", {}).items():
        if name not in datasets:
            errors.append((("figures", "fig2", name), f"no dataset {name!r} (known: {known})"))
        invalid = sorted(set(fig2["scales"]) - set(config["experiment"]["scales"]))
        if invalid:
            errors.append((("figures", "fig2", name, "scales"), f"scales {invalid} not in experiment.scales"))
    return errors


#: Keys of a model set whose value is a model reference (``classifier`` is a timm architecture).
MODEL_REF_KEYS = ("sd", "blip2", "clip", "sscd")


def model_source_errors(config: dict[str, Any]) -> list[tuple[tuple, str]]:
    """Sources (``model_sources:``) of a ref no model set uses: a typo there would leave the model
    unpinned and `realfake models fetch` fetching nothing for it."""
    used = {s[k] for s in config["models"].values() for k in MODEL_REF_KEYS if s.get(k)}
    return [
        (("model_sources", ref), f"no model set uses {ref!r} (as models.<set>.{'/'.join(MODEL_REF_KEYS)})")
        for ref in config.get("model_sources", {})
        if ref not in used
    ]


def lira_errors(config: dict[str, Any], schema: dict) -> list[tuple[tuple, str]]:
    """LiRA settings naming an unknown dataset or a generator without fine-tuning, or overrides that
    do not make a valid setting of the dataset's finetune / synthesis / recipe."""
    errors: list[tuple[tuple, str]] = []
    for name, lira in config.get("lira", {}).items():
        if name not in config["datasets"]:
            errors.append((("lira", name), f"no dataset {name!r} (known: {', '.join(config['datasets'])})"))
            continue
        variant = config["variants"].get(lira["variant"])
        if variant is None or not variant["finetune"]:
            errors.append(
                (("lira", name, "variant"), f"{lira['variant']!r} is no variant with finetune: true")
            )
        for key, section in (("finetune", "finetune"), ("synthesis", "synthesis"), ("recipe", "recipes")):
            base = config[section].get(config["datasets"][name][key])
            if base is None:  # a dangling reference, reported by find_errors
                continue
            merged = {**base, **lira.get(key, {})}
            validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{key}"})
            errors += [
                (("lira", name, key, *e.absolute_path), e.message) for e in validator.iter_errors(merged)
            ]
    return errors


def layout_option_errors(name: str, dataset: dict[str, Any]) -> list[tuple[tuple, str]]:
    """Options the dataset's layout reader does not take, or required ones it lacks."""
    from realfake.index import LAYOUTS  # here: the readers need pandas, validating a config does not

    params = inspect.signature(LAYOUTS[dataset["layout"]]).parameters
    valid = [p for p in params if p != "root"]
    given = dataset.get("layout_options", {})
    where = ("datasets", name, "layout_options")
    errors = [
        (where, f"layout {dataset['layout']!r} takes no option {k!r}; valid: {valid}")
        for k in given
        if k not in valid
    ]
    required = [p for p in valid if params[p].default is inspect.Parameter.empty and p not in given]
    errors += [(where, f"layout {dataset['layout']!r} needs option {p!r}") for p in required]
    return errors


def validate(config: dict[str, Any], source: str | Path | None = None) -> None:
    """Raise :class:`ConfigError` listing every problem as ``file:line: key.path: message``."""
    errors = find_errors(config, load_schema())
    if errors:
        text = Path(source).read_text() if source and Path(source).is_file() else ""
        lines = key_lines(text) if text else {}  # line numbers only for the message
        where = str(source or "config")
        msg = "\n".join(f"  {_where(path, lines, where)}: {message}" for path, message in errors)
        raise ConfigError(f"invalid configuration ({len(errors)} problem(s)):\n{msg}")
