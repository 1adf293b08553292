"""MLflow: one run per training job and a registered model version per global model.

Registration runs *after* the job has saved its model and summary in the coordinator's store,
from those files. If MLflow is unreachable the trained model is therefore never lost:
``fedcrm track JOB_ID`` registers it later. Errors become ``ConnectorError`` naming the tracking
URI without credentials.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

from fedcrm import __version__
from fedcrm.errors import ConnectorError
from fedcrm.features import FeaturePipeline
from fedcrm.learners.base import SavedModel
from fedcrm.summary import JobSummary
from fedcrm.task_types import make_task_type

PYFUNC_MODEL_CODE = str(Path(__file__).with_name("pyfunc_model.py"))
"""The model's code, logged with each version (MLflow models from code: no pickled object)."""
PIP_REQUIREMENTS = ["torch==2.13.0", "pandas==3.1.1", "numpy==2.4.6", "pydantic==2.14.3", "scikit-learn==1.9.1"]


class TrackingResult(BaseModel):
    tracking_uri: str
    experiment: str
    run_id: str
    model_name: str
    model_version: str
    ui_command: str


def redact(uri: str) -> str:
    """The URI without user:password."""
    parts = urlsplit(uri)
    if parts.password or parts.username:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


def _round_metrics(summary: JobSummary) -> dict[int, dict[str, float]]:
    """Each round's metrics by step: the global and regional quality the task type names, each region's
    cumulative ε and the mean training loss."""
    task = make_task_type()  # a summary records no task type yet: every job so far is binary
    out: dict[int, dict[str, float]] = {}
    for rnd in summary.rounds:
        values = {}
        if rnd.metrics is not None:
            values = {f"global.{k}": getattr(rnd.metrics, k) for k in task.global_metrics}
        for region, m in rnd.region_metrics.items():
            values.update({f"region.{region}.{k}": getattr(m, k) for k in task.metrics})
        values.update({f"epsilon.{region}": e for region, e in rnd.epsilon_spent.items()})
        values["train.mean_loss"] = rnd.mean_loss
        out[rnd.round] = values
    return out


def _baseline_metrics(summary: JobSummary) -> dict[str, float]:
    """The baselines' primary metric (logged under its historical ``auc`` names) and each region's job ε."""
    primary = make_task_type().primary_metric
    out = {}
    for region, entry in summary.regions.items():
        if entry.local_only is not None:
            out[f"region.{region}.local_only_auc"] = getattr(entry.local_only, primary)
        if entry.personalisation is not None:
            out[f"region.{region}.personalised_auc"] = getattr(entry.personalisation.personalised_metrics, primary)
        if entry.central_reference is not None:
            out[f"region.{region}.central_reference_auc"] = getattr(entry.central_reference, primary)
        if entry.epsilon_job_total is not None:
            out[f"epsilon_job_total.{region}"] = entry.epsilon_job_total
    for name in ("local_only", "central_reference"):
        found = getattr(summary.baselines, name)
        if getattr(found, primary, None) is not None:
            out[f"baseline.{name}.auc"] = getattr(found, primary)
    return out


def version_tags(summary: JobSummary) -> dict[str, str]:
    """Lineage and privacy spend of a model version (all aggregates, no row-level value)."""
    privacy = summary.privacy
    included = [r for r, e in summary.regions.items() if e.status == "included"]
    tags = {
        "job_id": summary.job_id,
        "use_case": summary.use_case,
        "strategy": str(privacy.strategy),
        "differential_privacy": str(privacy.differential_privacy),
        "delta": str(privacy.delta),
        "accountant": str(privacy.accountant),
        "randomness": str(privacy.randomness),
        "epsilon_holds": str(privacy.epsilon_holds),
        "rounds": str(len(summary.rounds)),
        "attempts": str(1 + len(summary.resumes)),
        "participating_regions": ",".join(included),
        "contract_sha256": summary.contract_sha256,
        "code_version": code_version(),
        "global_auc": f"{getattr(summary.metrics, make_task_type().primary_metric):.4f}" if summary.metrics else "",
    }
    if privacy.epsilon_warning:
        tags["epsilon_warning"] = privacy.epsilon_warning
    for region, entry in summary.regions.items():
        if entry.data_fingerprint:
            tags[f"data_fingerprint.{region}"] = entry.data_fingerprint
        if entry.privacy_plan is not None:
            plan = entry.privacy_plan
            tags[f"epsilon_target.{region}"] = f"{plan.target_epsilon:g}"
            tags[f"noise_multiplier.{region}"] = f"{plan.noise_multiplier:.6g}"
            tags[f"sample_rate.{region}"] = f"{plan.sample_rate:.6g}"
            tags["clip_norm"] = f"{plan.max_grad_norm:g}"
        if entry.epsilon_spent is not None:
            tags[f"epsilon_spent.{region}"] = f"{entry.epsilon_spent:.4f}"
        if entry.personalisation is not None:
            tags[f"scores_with.{region}"] = entry.personalisation.chosen
        if entry.epsilon_job_total is not None:
            tags[f"epsilon_job_total.{region}"] = f"{entry.epsilon_job_total:.4f}"
        if entry.privacy_budget:  # from the region's lifetime ledger, after this job
            budget = entry.privacy_budget
            tags["privacy_population"] = budget.population
            tags[f"epsilon_lifetime.{region}"] = f"{budget.spent:.4f}"
            tags[f"epsilon_budget.{region}"] = f"{budget.budget:g}"
            if budget.remaining is not None:
                tags[f"epsilon_remaining.{region}"] = f"{budget.remaining:.4f}"
    return tags


def _figure(summary: JobSummary):
    """The task type's primary metric (AUC) per round, global and per region, beside each region's cumulative ε."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = make_task_type()
    primary, label = task.primary_metric, task.metric_labels[task.primary_metric]
    rounds = [r.round for r in summary.rounds]
    evaluated = [r for r in summary.rounds if r.metrics is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([r.round for r in evaluated], [getattr(r.metrics, primary) for r in evaluated], marker="o", label="global")
    for region in summary.regions:
        left.plot([r.round for r in evaluated],
                  [getattr(r.region_metrics[region], primary) if region in r.region_metrics else float("nan")
                   for r in evaluated],
                  alpha=0.6, label=region)
    left.set(title=f"{label} per round", xlabel="round", ylabel=label)
    left.legend()
    for region in summary.regions:
        right.plot(rounds, [r.epsilon_spent.get(region, float("nan")) for r in summary.rounds], marker=".", label=region)
    right.set(title="cumulative ε per region", xlabel="round", ylabel="ε")
    right.legend()
    fig.tight_layout()
    return fig


class MlflowTracker:
    """Logs a saved job to MLflow and registers its model as ``fedcrm-<use case>``."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None):
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root

    @property
    def description(self) -> str:
        return f"MLflow at {redact(self.tracking_uri)}"

    def log_job(self, job_dir: Path, *, experiment: str, model_name: str, summary: JobSummary | None = None) -> TrackingResult:
        """Log the job saved in ``job_dir``; the coordinator passes its summary itself (``fedcrm track``,
        retrying a failed registration later, reads the saved one)."""
        try:
            return self._log_job(job_dir, experiment=experiment, model_name=model_name, summary=summary)
        except ConnectorError:
            raise
        except Exception as exc:  # noqa: BLE001 - any MLflow/IO failure: the job's files are intact
            raise ConnectorError(
                f"could not record job in MLflow ({type(exc).__name__})",
                source=self.description,
                hint=f"the trained model is safe in {job_dir}; when MLflow is reachable run `fedcrm track {job_dir.name}`",
            ) from None

    def _log_job(self, job_dir: Path, *, experiment: str, model_name: str, summary: JobSummary | None) -> TrackingResult:
        import mlflow
        from mlflow.entities import Param
        from mlflow.models import infer_signature
        from mlflow.tracking import MlflowClient

        from fedcrm.scoring import Scorer, synthetic_example

        if summary is None:
            summary = JobSummary.model_validate(json.loads((job_dir / "summary.json").read_text(encoding="utf-8")))
        pipeline = FeaturePipeline.model_validate(json.loads((job_dir / "feature_pipeline.json").read_text(encoding="utf-8")))
        model = SavedModel.model_validate_json((job_dir / "model.json").read_text(encoding="utf-8"))
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(
            experiment, artifact_location=self.artifact_root.resolve().as_uri() if self.artifact_root else None
        )
        example = synthetic_example(pipeline)
        scores = Scorer(pipeline, model).score(example)
        # log_model only works through MLflow's process-wide URIs: the coordinator process points
        # them at this job's store (all reads in this module pass explicit URIs).
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        params = {k: v[:6000] for k, v in flatten("", summary.config, {}).items()}
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{summary.use_case}-{summary.job_id}") as run:
            client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
            import matplotlib.pyplot as plt

            figure = _figure(summary)
            mlflow.log_figure(figure, "auc_and_epsilon_per_round.png")
            plt.close(figure)
            mlflow.log_dict(summary.model_dump(mode="json"), "summary.json")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=PYFUNC_MODEL_CODE,
                artifacts={"pipeline": str(job_dir / "feature_pipeline.json"), "model": str(job_dir / "model.json")},
                signature=infer_signature(example, scores),
                input_example=example,
                pip_requirements=PIP_REQUIREMENTS,
                registered_model_name=model_name,
            )
            # The run's metrics and tags also belong to the model it produced (MLflow 3's LoggedModel; log_model
            # links the parameters already logged), so the Models page compares versions by quality and ε.
            for step, values in _round_metrics(summary).items():
                mlflow.log_metrics(values, step=step, model_id=info.model_id)
            if baseline := _baseline_metrics(summary):
                mlflow.log_metrics(baseline, model_id=info.model_id)
            tags = version_tags(summary)
            mlflow.set_tags(tags)
            mlflow.set_logged_model_tags(info.model_id, tags)
        version = str(info.registered_model_version)
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        return TrackingResult(
            tracking_uri=redact(self.tracking_uri),
            experiment=experiment,
            run_id=run.info.run_id,
            model_name=model_name,
            model_version=version,
            ui_command=f"mlflow ui --backend-store-uri {redact(self.tracking_uri)}",
        )


CHAMPION, CHALLENGER = "champion", "challenger"


class DeployedModel(BaseModel):
    """A registered version's global model, as the regions need it to score."""

    version: str
    pipeline: FeaturePipeline
    model: SavedModel
    personalised: bool = False
    """Whether ``model`` is the scoring region's personalised model of the version's job (kept in its store)."""


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class ModelRegistry:
    """The registered model's aliases, gate results and weights (explicit URIs, no process-wide state)."""

    def __init__(self, tracking_uri: str, model_name: str):
        from mlflow.tracking import MlflowClient

        self.tracking_uri, self.model_name = tracking_uri, model_name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @property
    def description(self) -> str:
        return f"MLflow registry {self.model_name} at {redact(self.tracking_uri)}"

    def _wrapped(self, action: str, call):
        try:
            return call()
        except ConnectorError:
            raise
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the caller gets one
            raise ConnectorError(f"could not {action} ({type(exc).__name__}: {exc})", source=self.description,
                                 hint="check tracking.uri and that the MLflow server is reachable") from None

    def version_with_alias(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        def find() -> str | None:
            try:
                return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
            except MlflowException as exc:
                if _missing(exc):
                    return None
                raise

        return self._wrapped(f"read alias {alias}", find)

    def load(self, version: str) -> DeployedModel:
        import mlflow

        def fetch() -> DeployedModel:
            uri = self.client.get_model_version_download_uri(self.model_name, version)
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp,
                                                                tracking_uri=self.tracking_uri))
                model = SavedModel.model_validate_json((root / "artifacts" / "model.json").read_text(encoding="utf-8"))
                pipeline = FeaturePipeline.model_validate_json(
                    (root / "artifacts" / "feature_pipeline.json").read_text(encoding="utf-8"))
            return DeployedModel(version=version, pipeline=pipeline, model=model)

        return self._wrapped(f"load version {version}", fetch)

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        def write() -> None:
            for key, value in tags.items():
                self.client.set_model_version_tag(self.model_name, version, key, value[:5000])

        self._wrapped(f"tag version {version}", write)

    def tags(self, version: str) -> dict[str, str]:
        return self._wrapped(f"read version {version}",
                             lambda: dict(self.client.get_model_version(self.model_name, version).tags or {}))

    def remove_alias(self, alias: str) -> None:
        self._wrapped(f"remove alias {alias}", lambda: self.client.delete_registered_model_alias(self.model_name, alias))

    def set_alias(self, alias: str, version: str) -> None:
        self._wrapped(f"set alias {alias}", lambda: self.client.set_registered_model_alias(self.model_name, alias, version))

    def log_run_artifact(self, version: str, name: str, document: Any) -> None:
        def write() -> None:
            run_id = self.client.get_model_version(self.model_name, version).run_id
            self.client.log_text(run_id, json.dumps(document, indent=2, default=str), name)

        self._wrapped(f"log {name} for version {version}", write)

    def log_run_text(self, version: str, name: str, text: str) -> None:
        """A text document (e.g. HTML) as artifact ``name`` of the version's run, replacing an earlier one."""
        def write() -> None:
            run_id = self.client.get_model_version(self.model_name, version).run_id
            self.client.log_text(run_id, text, name)

        self._wrapped(f"log {name} for version {version}", write)

    def read_run_text(self, version: str, name: str) -> str | None:
        """Artifact ``name`` of the version's run as text, or None when the run has no such artifact."""
        def read() -> str | None:
            run_id = self.client.get_model_version(self.model_name, version).run_id
            if name not in {f.path for f in self.client.list_artifacts(run_id)}:
                return None
            with tempfile.TemporaryDirectory() as tmp:
                return Path(self.client.download_artifacts(run_id, name, tmp)).read_text(encoding="utf-8")

        return self._wrapped(f"read {name} of version {version}", read)

    def tag_values(self, key: str) -> list[str]:
        """The value of tag ``key`` on every version that has it."""
        return self._wrapped(f"read tag {key}", lambda: [
            v.tags[key] for v in self.client.search_model_versions(f"name = '{self.model_name}'") if key in (v.tags or {})])

    def versions(self) -> list[VersionRow]:
        """Every version, newest first, with what a reviewer compares: aliases, gates, ε and AUC."""
        def read() -> list[VersionRow]:
            found = self.client.search_model_versions(f"name = '{self.model_name}'")
            if not found:
                return []
            aliases: dict[str, list[str]] = {}  # search results do not carry aliases in every store
            for alias, version in self.client.get_registered_model(self.model_name).aliases.items():
                aliases.setdefault(str(version), []).append(alias)
            return sorted((VersionRow.from_tags(str(v.version), aliases.get(str(v.version), []), dict(v.tags or {}),
                                                int(v.creation_timestamp or 0)) for v in found),
                          key=lambda row: int(row.version), reverse=True)

        return self._wrapped("list versions", read)


class VersionRow(BaseModel):
    version: str
    aliases: list[str]
    created_ms: int
    job_id: str = ""
    global_auc: str = ""
    gate_status: str = ""
    epsilon_spent: dict[str, str] = {}
    decision: str = ""

    @classmethod
    def from_tags(cls, version: str, aliases: list[str], tags: dict[str, str], created_ms: int) -> VersionRow:
        return cls(version=version, aliases=sorted(aliases), created_ms=created_ms, job_id=tags.get("job_id", ""),
                   global_auc=tags.get("global_auc", ""), gate_status=tags.get("gate.status", "not evaluated"),
                   epsilon_spent={k.removeprefix("epsilon_spent."): v for k, v in tags.items()
                                  if k.startswith("epsilon_spent.")},
                   decision=tags.get("approval.decision", "") or _pending(tags))


def _pending(tags: dict[str, str]) -> str:
    """An open approval request: pending, or a rejection once its deadline passed (a suspended run that
    timed out cannot record that itself)."""
    until = tags.get("approval.pending_until")
    if not until:
        return ""
    expired = datetime.fromisoformat(until) < datetime.now(timezone.utc)
    return "rejected (timed out)" if expired else f"pending until {until}"


def decision_tags(decision: str, who: str, comment: str, at: str, *, previous: str | None = None) -> dict[str, str]:
    """What a version records about the human decision on it (shown by `fedcrm models` and the MLflow UI)."""
    tags = {"approval.decision": decision, "approval.by": who, "approval.at": at, "approval.comment": comment or "-"}
    if previous is not None:
        tags["approval.previous_champion"] = previous or "none"
    return tags
