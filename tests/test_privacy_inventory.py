"""docs/privacy.md lists every release: each message a region answers (with every field it carries)
and every MLflow name the code writes. Both lists are derived from the code, so a new step, a new
reply field or a new MLflow param/metric/tag fails this test until the inventory says how it is
protected."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from fedcrm.protocol import STEP_REQUESTS, Finish, Retire, StepReply
from flows.region import residency_evidence

ROOT = Path(__file__).resolve().parent.parent
PRIVACY_MD = (ROOT / "docs" / "privacy.md").read_text(encoding="utf-8")

MLFLOW_WRITERS = [ROOT / "connectors" / "tracking.py", ROOT / "connectors" / "monitoring.py",
                  *sorted((ROOT / "tasks").glob("*.py")), *sorted((ROOT / "flows").glob("*.py"))]
"""Every module that writes to MLflow (connectors) or builds what is written (tasks, flows)."""

SINKS = {"set_tags", "set_tag", "log_metrics", "log_metric", "log_params", "log_param", "set_model_version_tag",
         "log_drift_run", "record_decision", "log_run_artifact"}
"""Calls whose dict arguments become MLflow names (``record_decision`` passes its dict to set_tags)."""

NAMED_DICTS = {"tags", "metrics", "params", "values", "baseline_metrics"}
"""Local dicts that the writers above hand to a sink."""


def section(title: str) -> str:
    """The text of docs/privacy.md's section ``title`` (up to the next heading of the same level or above)."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#|\Z)", PRIVACY_MD, flags=re.M | re.S)
    assert match, f"docs/privacy.md has no section {title!r}"
    return match.group(1)


def table_rows(text: str) -> dict[str, set[str]]:
    """First backticked token of each table row → every backticked token of the row."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|"):
            tokens = re.findall(r"`([^`]+)`", line)
            if tokens:
                rows[tokens[0]] = set(tokens)
    return rows


# --- messages ------------------------------------------------------------------------------


def fields_of(annotation: typing.Any, out: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every field of every typed model (pydantic or dataclass) a value of ``annotation`` can carry."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return fields_of(typing.get_args(annotation)[0], out)
    if origin is not None:
        for argument in typing.get_args(annotation):
            fields_of(argument, out)
        return out
    if not isinstance(annotation, type) or annotation.__qualname__ in out:
        return out
    if issubclass(annotation, BaseModel):
        out[annotation.__qualname__] = list(annotation.model_fields)
        for field in annotation.model_fields.values():
            fields_of(field.annotation, out)
    elif dataclasses.is_dataclass(annotation):
        hints = typing.get_type_hints(annotation, include_extras=True)
        out[annotation.__qualname__] = [f.name for f in dataclasses.fields(annotation)]
        for field in dataclasses.fields(annotation):
            fields_of(hints[field.name], out)
    return out


def message_kinds() -> dict[str, set[str]]:
    """What a region posts: its hello, the reply envelope, and one reply per step it answers, each with
    the field names it can carry."""
    kinds = {"hello": set(_hello_keys()),
             "StepReply": set(StepReply.model_fields)}
    for step in STEP_REQUESTS:
        kinds[step.name] = {f for fields in fields_of(step.reply_type, {}).values() for f in fields}
    return kinds


def _hello_keys() -> list[str]:
    """The keys of the residency evidence (read from the function's source: it needs a flow run to call)."""
    import inspect

    tree = ast.parse(inspect.getsource(residency_evidence))
    return [key.value for node in ast.walk(tree) if isinstance(node, ast.Dict)
            for key in node.keys if isinstance(key, ast.Constant)]


def test_the_message_list_is_derived_from_the_code():
    kinds = message_kinds()
    assert {"prepare-region", "local-training", "local-evaluation", "drift-check"} <= set(kinds)
    assert {"n_train", "fingerprint", "n_rows", "counts"} <= kinds["prepare-region"]
    assert kinds["hello"] == {"region", "flow_run_id", "worker", "deployment", "host"}
    assert set(Finish.model_fields) == set(Retire.model_fields) == {"protocol", "step"}  # sent to a region: carry nothing


@pytest.mark.parametrize("kind", sorted(message_kinds()))
def test_every_message_a_region_sends_and_every_field_of_it_is_in_the_inventory(kind):
    rows = table_rows(section("Messages a region sends"))
    assert kind in rows, f"docs/privacy.md 'Messages a region sends' has no row for `{kind}`"
    missing = message_kinds()[kind] - rows[kind]
    assert not missing, f"the row of `{kind}` in docs/privacy.md does not name field(s) {sorted(missing)}"


# --- MLflow --------------------------------------------------------------------------------


def _pattern(node: ast.expr, module: object) -> str | None:
    """An MLflow name as a pattern (``*`` for each computed part), or None when it is not a name."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "*" for v in node.values)
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "metric_key":
        return ".".join(_pattern(a, module) or "*" for a in node.args)
    if isinstance(node, ast.Name) and isinstance(getattr(module, node.id, None), str):
        return getattr(module, node.id)  # a module constant such as ANCHOR_TAG
    return None


def _param_keys(node: ast.Call) -> list[str]:
    """``Param(key, value)`` (MLflow's log_batch): a computed key is a configuration key, ``*``."""
    if node.args and not (isinstance(node.args[0], ast.Constant)):
        return ["*"]
    return [node.args[0].value] if node.args else []


def _dict_keys(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.Dict):
        return [k for k in node.keys if k is not None]
    if isinstance(node, ast.DictComp):
        return [node.key]
    return []


def _callee(call: ast.Call) -> str | None:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)


def mlflow_names() -> dict[str, set[str]]:
    """pattern → the files that write it."""
    found: dict[str, set[str]] = {}
    for path in MLFLOW_WRITERS:
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        keys: list[ast.expr] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in NAMED_DICTS and node.value is not None:
                        keys += _dict_keys(node.value)
                    if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                            and target.value.id in NAMED_DICTS):
                        keys.append(target.slice)
            elif isinstance(node, ast.Call):
                name = _callee(node)
                if (name == "update" and isinstance(node.func, ast.Attribute)
                        and getattr(node.func.value, "id", None) in NAMED_DICTS):
                    keys += [k for a in node.args for k in _dict_keys(a)]
                if name == "Param":
                    for pattern in _param_keys(node):
                        found.setdefault(pattern, set()).add(str(path.relative_to(ROOT)))
                if name in SINKS:
                    arguments = [*node.args, *(k.value for k in node.keywords)]
                    keys += [k for a in arguments for k in _dict_keys(a)]
                    if name == "log_run_artifact" and len(node.args) >= 2:
                        keys.append(node.args[1])
        for key in keys:
            pattern = _pattern(key, module)
            if pattern is not None:
                found.setdefault(pattern, set()).add(str(path.relative_to(ROOT)))
    return found


def documented_mlflow_names() -> set[str]:
    tokens = set().union(*table_rows(section("MLflow fields")).values())
    return {re.sub(r"<[^>]+>", "*", token) for token in tokens}


def test_the_mlflow_list_is_derived_from_the_code():
    names = mlflow_names()
    # a sample of what the writers are known to write, so an extraction that finds nothing cannot pass
    assert {"data_fingerprint.*", "epsilon_spent.*", "global.*", "region.*.*", "train.mean_loss", "gate.status",
            "psi.*.*", "rows.*.baseline", "approval.decision", "rollback.by", "audit.coordinator_head"} <= set(names)


@pytest.mark.parametrize("name", sorted(mlflow_names()))
def test_every_mlflow_param_metric_and_tag_is_in_the_inventory(name):
    assert name in documented_mlflow_names(), (
        f"MLflow name `{name}` (written by {sorted(mlflow_names()[name])}) is not in docs/privacy.md 'MLflow fields'")
