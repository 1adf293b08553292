"""Reference pages generated from the code, so that they cannot drift from it.

``configuration_reference`` walks ``FedcrmConfig``'s pydantic schema (types, defaults, field
descriptions and section docstrings), ``summary_reference`` the ``JobSummary`` model; the CLI page
comes from typer (``cli/reference.py``). ``make docs`` writes them into ``docs/reference/``; ``tests/test_reference_pages.py`` fails when a
checked-in page differs from what the code generates.
"""

from __future__ import annotations

import json
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from fedcrm.config import PROJECT_ROOT, FedcrmConfig, RegionSpec
from fedcrm.summary import SUMMARY_SCHEMA_VERSION, JobSummary


GENERATED_NOTE = "<!-- Generated from the code by `make docs`; do not edit by hand (a test compares it). -->"


def _type_name(annotation: Any) -> str:
    """A short, readable type: ``'dp' | 'off'``, ``int``, ``list[int]``, ``path | none``."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(json.dumps(a) if not isinstance(a, str) else f"'{a}'" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(annotation))}]"
    if origin is dict:
        key, value = get_args(annotation)
        return f"map {_type_name(key)} → {_type_name(value)}"
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type):
        if issubclass(annotation, Path):
            return "path"
        if issubclass(annotation, BaseModel):
            return annotation.__name__
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
        return ", ".join(value)
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):  # a bundled folder: shown relative to the project, not to this machine
        value = str(value.relative_to(PROJECT_ROOT) if value.is_absolute() and value.is_relative_to(PROJECT_ROOT) else value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    return f"`{text}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _section_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _union_models(annotation: Any) -> list[type[BaseModel]]:
    """The models of a (possibly optional, annotated, discriminated) union, in declaration order."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _union_models(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _union_models(a)]
    model = _section_model(annotation)
    return [model] if model else []


def _rows(model: type[BaseModel], prefix: str, sections: list[tuple[str, type[BaseModel], str]]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _section_model(field.annotation)
        if nested is not None:
            sections.append((key, nested, ""))
            continue
        variants = _union_models(field.annotation)
        if len(variants) > 1:
            for variant in variants:
                kind = get_args(variant.model_fields["kind"].annotation)[0]
                sections.append((key, variant, f"kind: {kind}"))
        description = field.description or ("Selects this kind." if name == "kind" else "")
        rows.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {_cell(description)} |")
    return rows


def _table(title: str, model: type[BaseModel], prefix: str, sections: list[tuple[str, type[BaseModel], str]]) -> list[str]:
    lines = [f"## {title}", ""]
    if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
        lines += [_cell(model.__doc__), ""]
    lines += ["| key | type | default | what it does |", "|---|---|---|---|", *_rows(model, prefix, sections), ""]
    return lines


def configuration_reference() -> str:
    """Every configuration key: ``--set KEY=VALUE`` on the CLI, or the same path in a YAML file."""
    lines = [
        "# Configuration reference",
        "",
        GENERATED_NOTE,
        "",
        "Every key below can be set in a YAML file (`--config FILE`, nested as the dots say) or on the",
        "command line (`--set KEY=VALUE`, repeatable). Region keys go under `federation.regions.<region>`.",
        "",
    ]
    pending: list[tuple[str, type[BaseModel], str]] = []
    lines += _table("Top level", FedcrmConfig, "", pending)
    done: set[tuple[str, str]] = set()
    while pending:
        key, model, variant = pending.pop(0)
        if (key, variant) in done:
            continue
        done.add((key, variant))
        title = f"`{key}`" + (f" ({variant})" if variant else "")
        lines += _table(title, model, f"{key}.", pending)
        if key == "federation":
            lines += _table("`federation.regions.<region>`", RegionSpec, "federation.regions.<region>.", pending)
    lines += _environment()
    return "\n".join(lines).rstrip() + "\n"


def _environment() -> list[str]:
    """The settings read from the environment where a run executes (``fedcrm/settings.py``)."""
    from fedcrm.settings import CONFIG_KEYS, DeploymentSettings, RegionSettings

    lines = ["## Environment", "",
             "Deployment settings (`DeploymentSettings`) are read where a coordinator-side command or flow runs (the",
             "CLI, the coordinator's work pool, a region's scoring run): each fills in its configuration key when the",
             "configuration leaves it unset, and a value in the file, `--set` or a flow parameter wins. A region's own",
             "settings (`RegionSettings`) are read by its regional run from its work pool's environment, and win over",
             "what the coordinator's configuration says about that region.", "",
             "| variable | configuration key | read by | what it does |", "|---|---|---|---|"]
    for name, field in DeploymentSettings.model_fields.items():
        lines.append(f"| `FEDCRM_{name.upper()}` | `{CONFIG_KEYS[name]}` (fills in) | the CLI, coordinator flows, "
                     f"scoring | {_meaning(field.description)} |")
    for name, field in RegionSettings.model_fields.items():
        variable = field.validation_alias if isinstance(field.validation_alias, str) else f"FEDCRM_REGION_{name.upper()}"
        key = ("none (checked against the run's region)" if name == "region" else
               "`secure_aggregation.keyring` (overrides)" if name == "keyring" else
               f"`federation.regions.<region>.{name}` (overrides)")
        lines.append(f"| `{variable}` | {key} | the regional run | {_meaning(field.description)} |")
    return lines + [""]


def _meaning(description: str | None) -> str:
    """A setting's docstring without the variable name it starts with, on one line."""
    text = " ".join((description or "").split(": ", 1)[-1].split())
    return text[:1].upper() + text[1:]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation refers to: itself, or inside a list, map, union or Annotated."""
    if get_origin(annotation) is not None:
        return [m for a in get_args(annotation) for m in _models_in(a)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def summary_reference() -> str:
    """Every field of the job summary (``fedcrm run --json-summary PATH``), model by model."""
    lines = [
        "# Job summary reference",
        "",
        GENERATED_NOTE,
        "",
        f"What `fedcrm run --json-summary PATH` writes (schema version {SUMMARY_SCHEMA_VERSION}), the coordinator keeps",
        "as `summary.json` beside each job's model, and MLflow keeps in the version's run. It holds only what may",
        "leave a region (docs/privacy.md): released counts, aggregate metrics, the privacy plans and ε.",
        "",
    ]
    queue: list[type[BaseModel]] = [JobSummary]
    seen: set[type[BaseModel]] = set()
    while queue:
        model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        lines += [f"## `{model.__name__}`", ""]
        if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
            lines += [_cell(model.__doc__), ""]
        lines += ["| field | type | what it holds |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_cell(field.description or '')} |")
            queue += _models_in(field.annotation)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_reference_pages(folder: Path) -> list[Path]:
    """Write the generated pages under ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = {"configuration.md": configuration_reference(), "summary.md": summary_reference()}
    for name, text in pages.items():
        (folder / name).write_text(text, encoding="utf-8")
    return [folder / name for name in pages]
