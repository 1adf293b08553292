"""The one typed configuration of a fedcrm job, parsed once at the boundary.

Load it from YAML with ``load_config`` (CLI: ``--config``), override any field with dotted
``key=value`` pairs (CLI: ``--set training.rounds=20``). Errors name the field and what to fix.
Every field has a default, so the embedded demo needs no file at all.
"""

from __future__ import annotations

from datetime import datetime, timezone
from itertools import pairwise
from math import isfinite
from pathlib import Path
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import re

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from fedcrm.catalog import RegionCatalog
from fedcrm.contract import DataContract, format_validation_error, load_contract
from fedcrm.errors import ConfigError
from fedcrm.resources import BUNDLED_CONTRACTS, BUNDLED_EXPECTATIONS
from fedcrm.secagg.graph import GraphParams
from fedcrm.settings import DeploymentSettings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The checkout's root: only meaningful in a checkout (tests, generated reference pages)."""

REGION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""A region's name: 1–63 characters, lower-case ASCII letters, digits, '-' and '_', starting with a
letter or digit. Names become folder names (state_dir/regions/<name>), mailbox names and keyring
entries, so nothing else is allowed: no '/', '.', '..', spaces or non-ASCII letters."""
RESERVED_REGION_NAMES = frozenset({"coordinator"})
"""Names a region cannot take: the coordinator's own identity in the keyring and the exchange."""


def region_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a region, or None when it can (the one check of region names)."""
    if not REGION_NAME.fullmatch(name):
        return ("a region name must be 1-63 characters of lower-case letters a-z, digits, '-' or '_', "
                "starting with a letter or digit")
    if name in RESERVED_REGION_NAMES:
        return f"{name!r} is reserved for the coordinator"
    return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalSource(_Section):
    """A CSV/parquet file standing in for a regional CRM (embedded mode)."""

    kind: Literal["local"] = "local"
    path: Path = Field(description="A .csv, .csv.gz or .parquet file.")
    separator: str | None = Field(None, description="CSV separator; default: the contract's source.separator.")


class S3Source(_Section):
    """CSV/parquet objects under a prefix of the region's own bucket (credentials: the region's environment)."""

    kind: Literal["s3"]
    bucket: str = Field(description="The region's own bucket.")
    prefix: str = Field("", description="Every .csv/.csv.gz/.parquet object under it is read and concatenated.")
    endpoint_url: str | None = Field(None, description="S3 API endpoint (default: AWS).")
    separator: str | None = Field(None, description="CSV separator; default: the contract's source.separator.")


class SqlSource(_Section):
    """A table or a query of the region's database (SQLAlchemy URL without a password: use PGPASSWORD etc.)."""

    kind: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/crm.")
    table: str | None = Field(None, description="Read this whole table ...")
    query: str | None = Field(None, description="... or the rows of this SELECT.")

    @model_validator(mode="after")
    def _one_of(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` and `query`")
        return self


class SalesforceSource(_Section):
    """An object of the region's Salesforce org, read by SOQL (credentials: the region's environment)."""

    kind: Literal["salesforce"]
    instance_url: str = Field(description="e.g. https://acme-eu.my.salesforce.com")
    object: str = Field(description="Lead (lead scoring), Account or a custom object (churn).")
    fields: dict[str, str] = Field(description="contract column → Salesforce field, e.g. {id: Id, age: Age__c}.")
    where: str | None = Field(None, description="An extra SOQL condition, e.g. IsConverted = false.")
    api_version: str = Field("59.0", description="Salesforce REST API version.")
    session_id_env: str = Field("SALESFORCE_SESSION_ID", description="Environment variable holding the access token.")
    session_id_secret: str | None = Field(
        None, description="A Prefect Secret block holding the access token, read by the region's run (instead of the "
                          "environment variable).")
    ca_bundle: str | None = Field(None, description="A CA bundle to verify the org's TLS certificate (tests, proxies).")


def _source_kind(value: Any) -> str:
    return value.get("kind", "local") if isinstance(value, dict) else getattr(value, "kind", "local")


RecordSourceSpec = Annotated[
    Annotated[LocalSource, Tag("local")] | Annotated[S3Source, Tag("s3")] | Annotated[SqlSource, Tag("sql")]
    | Annotated[SalesforceSource, Tag("salesforce")],
    Discriminator(_source_kind),
]


class StoreScores(_Section):
    """Scores as a parquet file in a store: the region's own (default) or another folder, s3:// prefix or database."""

    kind: Literal["store"] = "store"
    location: str | None = Field(None, description="Default: the region's own store.")


class SqlScores(_Section):
    """Scores upserted into a table of the region's database (created if missing)."""

    kind: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL without a password (use PGPASSWORD etc.).")
    table: str = Field("fedcrm_scores", description="Table upserted by record id.")


class SalesforceScores(_Section):
    """Scores written to a field of the records' own Salesforce object (the region's source must be Salesforce)."""

    kind: Literal["salesforce"]
    field: str = Field("Fedcrm_Score__c", description="The number field that receives the score.")


def _sink_kind(value: Any) -> str:
    return value.get("kind", "store") if isinstance(value, dict) else getattr(value, "kind", "store")


ScoreSinkSpec = Annotated[
    Annotated[StoreScores, Tag("store")] | Annotated[SqlScores, Tag("sql")]
    | Annotated[SalesforceScores, Tag("salesforce")],
    Discriminator(_sink_kind),
]


class RegionSpec(_Section):
    source: RecordSourceSpec | None = Field(None, description="Default: <state_dir>/regions/<region>/crm/<use_case>.parquet")
    store: str | None = Field(
        None, description="Region-private store: a folder, s3://bucket/prefix or a postgresql+psycopg:// URL. "
                          "Default: <state_dir>/regions/<region>",
    )
    work_pool: str | None = Field(None, description="Distributed mode: the region's Prefect work pool. Default: crm-<region>.")
    scores: ScoreSinkSpec | None = Field(None, description="Where batch scoring writes this region's scores. Default: "
                                         "a parquet file in the region's store.")


class FederationSpec(_Section):
    regions: dict[str, RegionSpec] = Field(
        default_factory=lambda: {r: RegionSpec() for r in ("eu", "us", "apac")},
        description="Region name → its settings (below), or a list of names.",
    )
    min_regions: int = Field(2, ge=1, description="The job fails if fewer regions remain after exclusions.")

    @field_validator("regions", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):  # allow `regions: [eu, us]`
            value = {name: {} for name in value}
        if isinstance(value, dict):
            value = {str(k): ({} if v is None else v) for k, v in value.items()}
            bad = {k: problem for k in value if (problem := region_name_problem(k))}
            if bad:
                raise ValueError("; ".join(f"{k!r}: {problem}" for k, problem in bad.items()))
        return value

    @model_validator(mode="after")
    def _quorum(self) -> FederationSpec:
        if self.min_regions > len(self.regions):
            raise ValueError(f"min_regions ({self.min_regions}) exceeds the number of regions ({len(self.regions)})")
        return self


class ExchangeSpec(_Section):
    url: str | None = Field(
        None, description="Where coordinator and regions exchange signed messages: a folder, or s3://bucket/prefix. "
                          "Default: <state_dir>/exchange.",
    )
    endpoint_url: str | None = Field(None, description="S3 API endpoint for an s3:// exchange (default: AWS).")
    poll_interval_s: float = Field(0.05, gt=0, le=10, description="How often a waiting party looks for its next message.")


class LauncherSpec(_Section):
    mode: Literal["embedded", "distributed"] = Field(
        "embedded", description="'embedded': regional flows run in this process; 'distributed': each region's "
                                "deployment runs on its own work pool.",
    )
    region_deployment: str = Field("fedcrm-region", description="Distributed mode: the regional flow's name; the "
                                   "deployment of region r is <region_deployment>/<r>.")
    start_timeout_s: float = Field(300, gt=0, description="A regional run that has not said hello by then is excluded.")
    step_timeout_s: float = Field(1800, gt=0, description="A region that has not answered a step by then is excluded "
                                  "(its late answer is ignored).")
    region_idle_timeout_s: float = Field(3600, gt=0, description="A regional run that hears nothing from the "
                                         "coordinator for this long releases its workspace and ends.")


class TreeSpec(_Section):
    """The boosted-tree learner (``fedcrm/learners/trees.py``): DP random trees, boosted in batches.

    Every hyperparameter left unset is derived by a documented rule from public quantities only (the
    regions' released row counts, the number of regions, the noise the budget allows): see
    ``fedcrm.learners.trees.tree_settings`` and docs/benchmarks.md."""

    trees_per_round: int = Field(
        16, ge=1, le=64, description="Trees grown per round on the same gradients and averaged (batched boosting; "
        "Maddock et al., CCS 2022). Each record is in one leaf of every tree, so the round's release has L2 "
        "sensitivity √(trees_per_round · 17/16).",
    )
    depth: int | None = Field(
        None, ge=1, le=8, description="Tree depth. Unset: the deepest tree whose expected leaf hessian is still "
        "`leaf_signal` × the summed noise, from the public row counts (at most 6).",
    )
    learning_rate: float = Field(0.8, gt=0, le=1, description="Shrinkage of each round's (averaged) Newton step.")
    leaf_signal: float = Field(
        4.0, gt=0, description="How many noise standard deviations a leaf's expected hessian must reach (the depth rule), "
        "and half of it the threshold below which a leaf's noisy hessian counts as noise and its value is 0.",
    )


class TrainingSpec(_Section):
    learner: Literal["mlp", "boosted_trees"] = Field(
        "mlp", description="The model family: 'mlp' (MLP / logistic regression by DP-SGD) or 'boosted_trees' (DP random "
        "trees with leaf values from securely summed, noised gradient and hessian sums; `training.trees`).",
    )
    trees: TreeSpec = TreeSpec()
    rounds: int = Field(15, ge=1, le=1000, description="Federated rounds; `--rounds N` sets it.")
    local_epochs: int = Field(1, ge=1, le=100, description="Local epochs per round.")
    batch_size: int = Field(256, ge=1, description="Expected (Poisson) batch size under DP.")
    learning_rate: float = Field(0.5, gt=0, description="Tuned for DP-SGD with clipped gradients (docs/benchmarks.md).")
    hidden_sizes: list[int] = Field(default_factory=lambda: [64], description="[] = logistic regression")
    evaluate_every: int = Field(1, ge=1, description="Federated evaluation every k rounds (the last round always).")
    local_head: bool = Field(
        False, description="Personalisation: each region scores with the global body and its own output layer."
    )
    personal_rounds: int = Field(
        1, ge=0, le=100,
        description="Rounds of local training from the final global model in each region, on its own rows (its "
        "personalised model; the region keeps whichever of the two is better on its holdout). Inside the job's ε: "
        "the privacy plan calibrates its noise for rounds + personal_rounds. 0: every region gets the global model.",
    )
    class_weighting: Literal["balanced", "none"] = Field(
        "none", description="'balanced': BCE positive weight = neg/pos of the region's labels (better recall, "
        "uncalibrated scores); non-private jobs only, since the weight is read from the exact label counts",
    )
    seed: int = Field(0, description="Model initialisation and non-private shuffling; never DP's sampling or noise.")

    @field_validator("hidden_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError("hidden layer sizes must be positive")
        return value


class PrivacySpec(_Section):
    mode: Literal["dp", "off"] = Field(
        "dp", description="'dp': record-level DP-SGD in every region; 'off': non-private (research only, warned loudly)"
    )
    target_epsilon: float = Field(3.0, gt=0, description="Each region's total ε for the whole job (all rounds).")
    delta: float = Field(1e-5, gt=0, lt=1, description="Must be below 1/n for every region's training records.")
    accountant: Literal["prv", "rdp"] = Field("prv", description="'prv' (tight, Gopi et al. 2021) or 'rdp'.")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false
    max_grad_norm: float = Field(1.0, gt=0, description="Per-sample gradient clipping bound C.")
    max_noise_multiplier: float = Field(50.0, gt=0, description="Refuse plans that need more noise than this.")
    randomness: Literal["secure", "seeded"] = Field(
        "secure", description="Where DP-SGD's Poisson batch sampling AND the DP noise come from. 'secure': a ChaCha20-based "
        "CSPRNG under a fresh OS key; 'seeded': both reproducible from training.seed, so the printed ε does NOT hold "
        "against anyone who knows the seed (research only, warned next to every ε). The old name privacy.noise is accepted.",
    )

    @model_validator(mode="before")
    @classmethod
    def _noise_is_the_old_name_of_randomness(cls, data: Any) -> Any:
        """``privacy.noise`` (which now also decides the batch sampling) still works, unless it contradicts ``randomness``."""
        if isinstance(data, dict) and "noise" in data:
            data = dict(data)
            old = data.pop("noise")
            if "randomness" in data and data["randomness"] != old:
                raise ValueError(
                    f"privacy.noise ({old!r}) is the old name of privacy.randomness ({data['randomness']!r}) and contradicts "
                    "it; keep only privacy.randomness (secure or seeded)"
                )
            data["randomness"] = old
        return data
    statistics_noise_multiplier: float = Field(
        10.0, gt=0, description="Gaussian noise (× the L2 sensitivity) on each region's feature statistics under DP.",
    )
    lifetime_epsilon: float = Field(
        10.0, gt=0, description="Each region's lifetime ε budget per population, set when its ledger is created.",
    )
    population: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$",
        description="Whose budget a job spends. Default: the use case; give lead scoring and churn on the same "
        "customers the same population so they share one ledger.",
    )
    reservation_ttl_hours: float = Field(
        24.0, gt=0, description="An open reservation idle this long (a crashed job) is reconciled to what it recorded.",
    )
    min_k: int = Field(
        5, ge=2, description="Small-count threshold: a release that is not DP needs ≥ k rows (training rows are never rewritten)."
    )


class StrategySpec(_Section):
    name: Literal["fedavg", "fedprox", "fedadam", "median", "trimmed_mean"] = Field(
        "fedavg", description="median/trimmed_mean need a trusted aggregator (incompatible with secure aggregation)"
    )
    mu: float = Field(0.01, ge=0, description="FedProx proximal coefficient.")
    server_learning_rate: float = Field(0.05, gt=0, description="FedAdam server step.")
    beta1: float = Field(0.9, ge=0, lt=1, description="FedAdam first-moment decay.")
    beta2: float = Field(0.99, ge=0, lt=1, description="FedAdam second-moment decay.")
    tau: float = Field(1e-3, gt=0, description="FedAdam adaptivity.")
    trim_fraction: float = Field(0.1, ge=0, lt=0.5, description="Share trimmed at each end (trimmed_mean).")
    max_update_norm: float = Field(
        10.0, gt=0, description="Every region clips its update to this L2 norm; larger updates are rejected."
    )


class BaselineSpec(_Section):
    local_only: bool = Field(
        True, description="Also train each region alone (same model, same ε; its spend is charged to the region too)."
    )
    central_reference: bool = Field(
        True, description="Demo only: a pooled, non-private model on the bundled public data (illegal in production)."
    )


class GateSpec(_Section):
    """What a new global model must show before anyone may approve it for the CRM (AUC throughout)."""

    enabled: bool = Field(True, description="Evaluate the gates after each registered model version.")
    min_global_auc: float = Field(0.6, ge=0, le=1, description="Floor for the global (pooled) holdout AUC.")
    min_region_auc: float = Field(0.55, ge=0, le=1, description="Floor for every participating region's AUC.")
    max_global_regression: float = Field(
        0.005, ge=0, description="How far the global AUC may fall below the champion's, both measured now in every region.")
    max_region_regression: float = Field(
        0.02, ge=0, description="How far any region's AUC may fall below the champion's in that region.")
    max_region_gap: float = Field(0.2, ge=0, le=1, description="Largest allowed difference between regions' AUCs.")
    min_regions: int | None = Field(None, ge=1, description="Participating regions needed. Default: federation.min_regions.")
    beat_local_only: bool = Field(True, description="Each region's AUC at least its local-only baseline's (same ε).")
    local_only_tolerance: float = Field(0.0, ge=0, description="Slack allowed against the local-only baseline.")
    compare_with_champion: bool = Field(
        True, description="Evaluate the champion in every region alongside the candidate (off e.g. after a contract change).")


class ApprovalSpec(_Section):
    """The human decision between a challenger and the CRM."""

    timeout_s: int = Field(7 * 24 * 3600, ge=1, description="Waiting longer than this counts as a rejection.")
    wait: Literal["auto", "pause", "suspend"] = Field(
        "auto", description="suspend (no process waits; needs a deployment) or pause; auto: suspend when deployed.")


class ScoringSpec(_Section):
    """Regional batch scoring with the champion: who may be scored, and what is written back."""

    consent_column: str | None = Field(
        None, description="Column saying whether a record may be activated. Default: the contract's consent_column.")
    consent_values: list[str] = Field(
        default_factory=lambda: ["yes", "y", "true", "1", "opt-in", "opted-in", "granted"],
        description="Values (case-insensitive) that allow activation; anything else, or blank, is not scored.")
    require_consent: bool = Field(
        True, description="Refuse to score without a consent column (false only where consent is enforced upstream).")
    model_alias: str = Field("champion", description="The registered model alias that scores.")


class TrackingSpec(_Section):
    enabled: bool = Field(True, description="Register every global model version in MLflow with its ε and lineage.")
    uri: str | None = Field(None, description="MLflow tracking URI. Default: sqlite:///<state_dir>/mlflow.db (embedded).")
    experiment: str | None = Field(None, description="Default: fedcrm-<use_case>.")
    model_name: str | None = Field(None, description="Registered model. Default: fedcrm-<use_case>.")


class SecureAggregationSpec(_Section):
    enabled: bool = Field(
        True, description="The coordinator learns only the sum of the regions' contributions (docs/security.md)."
    )
    threshold_fraction: float = Field(
        2 / 3, gt=0, le=1,
        description="Share t of a party's group (neighbours and itself) needed to unmask; fewer colluders learn nothing.",
    )
    neighbours: int | None = Field(
        None, ge=2, description="SecAgg+ degree k. Default: complete graph up to full_graph_max_parties, else ≈3·log2(n).",
    )
    full_graph_max_parties: int = Field(100, ge=2, description="Above this many parties SecAgg+ is used.")
    max_weight: float = Field(
        1e8, gt=0, description="Public bound on a region's training examples (its FedAvg weight and counts).",
    )
    keyring: Path | None = Field(
        None, description="Public identity keys of every party. Default: <state_dir>/federation/keyring.json.",
    )

    def graph_params(self) -> GraphParams:
        return GraphParams(self.threshold_fraction, self.neighbours, self.full_graph_max_parties)


class DriftSpec(_Section):
    """Feature drift: PSI per feature between the champion's training data and each region's current records."""

    psi_threshold: float = Field(
        0.2, gt=0, description="A feature whose PSI exceeds this has drifted (rule of thumb: 0.1 moderate, 0.2 significant).")
    retrain: bool = Field(False, description="Start a training job when any region has a drifted feature.")
    z_edges: list[float] = Field(
        default_factory=lambda: [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0],
        description="Numeric bin cut points in pooled standard deviations from the pooled mean (a training job's "
                    "snapshot keeps the ones it was trained with).")
    smoothing: float = Field(0.5, gt=0, description="Added to every bin's count before PSI, so empty bins give finite values.")
    training_deployment: str = Field(
        "fedcrm-train/weekly", description="Distributed mode: the training deployment a drift-triggered retraining runs.")

    @field_validator("z_edges")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if not value or any(b <= a for a, b in pairwise(value)) or not all(isfinite(v) for v in value):
            raise ValueError("cut points must be finite and strictly increasing, e.g. [-2, -1, -0.5, 0, 0.5, 1, 2]")
        return value


class FeatureSpec(_Section):
    clip_z: float = Field(5.0, gt=0, description="Standardised numerics are clipped to ±clip_z.")


class HoldoutSpec(_Section):
    fraction: float = Field(0.2, gt=0, lt=1, description="Share of records in the id-hash holdout.")
    seed: int = Field(0, description="Key of the id hash that picks the holdout.")
    since: datetime | None = Field(
        None, description="With a contract event-time column: records at or after this instant (ISO 8601, UTC when no "
        "zone is given) form the holdout. A public cut-off keeps the split row-local; without it the holdout is the id hash.",
    )

    @field_validator("since")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class JobSpec(_Section):
    """What the coordinator decides for a job: the use case, who takes part, the model and how it is
    trained, the privacy guarantee, the baselines, the gates, approval, scoring and drift rules. The
    core (``fedcrm/``) takes this, never where anything is: that is the rest of ``FedcrmConfig``
    (state folder, contract file, MLflow, exchange, launcher), filled in from the deployment's
    environment (``DeploymentSettings``), and each region's own settings (``RegionSettings``)."""

    use_case: str = Field("lead-scoring", description="Which contract, stores, ledger population and model name.")
    federation: FederationSpec = FederationSpec()
    training: TrainingSpec = TrainingSpec()
    strategy: StrategySpec = StrategySpec()
    privacy: PrivacySpec = PrivacySpec()
    features: FeatureSpec = FeatureSpec()
    holdout: HoldoutSpec = HoldoutSpec()
    baselines: BaselineSpec = BaselineSpec()
    gates: GateSpec = GateSpec()
    approval: ApprovalSpec = ApprovalSpec()
    scoring: ScoringSpec = ScoringSpec()
    secure_aggregation: SecureAggregationSpec = SecureAggregationSpec()
    drift: DriftSpec = DriftSpec()

    @model_validator(mode="after")
    def _balanced_weighting_is_not_private(self) -> JobSpec:
        """'balanced' sets every positive record's loss weight from the region's exact label counts: one record
        added or removed rescales every other positive's gradient before DP-SGD clips it, so the declared
        sensitivity (and the printed ε) would not hold. Refused under DP rather than quietly voided."""
        if self.privacy.mode == "dp" and self.training.class_weighting == "balanced":
            raise ValueError(
                "training.class_weighting 'balanced' reads each region's exact label counts, which would void the "
                "DP guarantee; use class_weighting 'none' under privacy.mode 'dp' (ranking metrics such as AUC do not "
                "need it; pick a score threshold instead), or 'balanced' only with privacy.mode 'off'"
            )
        return self

    @model_validator(mode="after")
    def _trees_take_one_step_per_round(self) -> JobSpec:
        """The coordinator draws every tree's structure; a region can only fill the leaves of the round's batch,
        so a round is one boosting step, and the server-side optimisers and a local head have nothing to act on."""
        if self.training.learner != "boosted_trees":
            return self
        if self.training.local_epochs != 1:
            raise ValueError("training.learner 'boosted_trees' grows one batch of trees per round: set training.local_epochs=1 "
                             "(more trees per round: training.trees.trees_per_round)")
        if self.training.local_head:
            raise ValueError("training.local_head personalises the MLP's output layer; the boosted-tree learner has none: "
                             "set training.local_head=false")
        if self.strategy.name != "fedavg":
            raise ValueError(f"strategy {self.strategy.name!r} steps a parameter vector; the boosted-tree learner sums "
                             "gradient statistics: use strategy.name=fedavg with training.learner=boosted_trees")
        return self

    @model_validator(mode="after")
    def _secure_aggregation_fits_the_strategy(self) -> JobSpec:
        if self.secure_aggregation.enabled and self.strategy.name in ("median", "trimmed_mean"):
            raise ValueError(
                f"strategy {self.strategy.name!r} needs each region's update, which secure aggregation hides; "
                "use fedavg, fedprox or fedadam, or set secure_aggregation.enabled=false (a trusted coordinator)"
            )
        return self

    @property
    def population(self) -> str:
        return self.privacy.population or self.use_case


DEPLOYMENT_KEYS = ("contract", "state_dir", "expectations_dir", "tracking", "exchange", "launcher")
"""The top-level keys of ``FedcrmConfig`` that say where things are, not what the job decides."""


class FedcrmConfig(JobSpec):
    """A job's spec (``JobSpec``) and where it runs: the state folder, the contract and suites, MLflow, the
    exchange and the launcher. Parsed once at the boundary (``load_config``)."""

    contract: Path | None = Field(None, description="Default: contracts/<use_case>.yaml (bundled).")
    state_dir: Path = Field(Path(".fedcrm"), description="Embedded mode's stand-in for all regional and central state.")
    expectations_dir: Path = Field(BUNDLED_EXPECTATIONS, description="Stored GX suites (generated on the fly from the contract when absent). Default: the suites bundled with fedcrm.")
    tracking: TrackingSpec = TrackingSpec()
    exchange: ExchangeSpec = ExchangeSpec()
    launcher: LauncherSpec = LauncherSpec()

    @property
    def keyring_path(self) -> Path:
        return self.secure_aggregation.keyring or self.state_dir / "federation" / "keyring.json"

    @property
    def coordinator_store(self) -> Path:
        return self.state_dir / "coordinator"

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    @property
    def model_name(self) -> str:
        return self.tracking.model_name or f"fedcrm-{self.use_case}"

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or f"fedcrm-{self.use_case}"

    @property
    def contract_path(self) -> Path:
        return self.contract or BUNDLED_CONTRACTS / f"{self.use_case}.yaml"

    def load_contract(self) -> DataContract:
        contract = load_contract(self.contract_path)
        if contract.use_case != self.use_case:
            raise ConfigError(
                f"contract {self.contract_path} is for use case {contract.use_case!r}, the job for {self.use_case!r}",
                hint="pass a matching --use-case, or point `contract:` at the right file",
            )
        if contract.min_rows < self.privacy.min_k:
            raise ConfigError(
                f"contract min_rows ({contract.min_rows}) is below privacy.min_k ({self.privacy.min_k})",
                hint="aggregates must cover at least k rows: raise min_rows in the contract",
            )
        return contract

    def with_deployment(self, settings: DeploymentSettings | None = None) -> FedcrmConfig:
        """This configuration with the deployment's settings (``fedcrm/settings.py``: the environment where
        the run executes) filling in what it leaves unset; whatever it sets explicitly stays."""
        data = fill_unset(self.model_dump(exclude_unset=True), settings or read_deployment_settings())
        return FedcrmConfig.model_validate(data)

    def region_store_location(self, region: str) -> str:
        """Where the region's private store is: a folder, an s3:// prefix or a database URL."""
        return self.federation.regions[region].store or str(self.state_dir / "regions" / region)

    def region_store(self, region: str) -> Path:
        """The region's store as a folder (embedded mode and the local tools)."""
        location = self.region_store_location(region)
        if "://" in location:
            raise ConfigError(f"region {region}'s store is {location.split('://')[0]}://…, not a folder",
                              hint="run this command where the region's store is a local folder")
        return Path(location)

    def work_pool(self, region: str) -> str:
        return self.federation.regions[region].work_pool or f"crm-{region}"

    def region_source(self, region: str) -> LocalSource | S3Source | SqlSource | SalesforceSource:
        spec = self.federation.regions[region]
        return spec.source or LocalSource(path=self.region_store(region) / RegionCatalog(self.use_case).records)


def _assign(data: dict[str, Any], key: str, value: Any, *, what: str) -> None:
    """Set ``data[a][b][c] = value`` for ``key = "a.b.c"``, creating sections on the way."""
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: {part!r} is not a section", hint="check the key path")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE", hint="e.g. --set training.rounds=20")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        _assign(data, key, value, what=f"override {item!r}")
    return data


def _is_set(data: Mapping[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def fill_unset(data: dict[str, Any], settings: DeploymentSettings) -> dict[str, Any]:
    """``data`` (a configuration as given, unset keys absent) with each deployment setting where it sets none."""
    for key, value in settings.values().items():
        if not _is_set(data, key):
            _assign(data, key, value, what=f"setting {key!r}")
    return data


def read_deployment_settings() -> DeploymentSettings:
    """The deployment settings in this process's environment (``FEDCRM_TRACKING_URI``, ...), validated."""
    try:
        return DeploymentSettings()
    except ValidationError as exc:
        raise ConfigError(
            "the environment holds an invalid fedcrm deployment setting:\n" + "\n".join(
                f"  FEDCRM_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()),
            hint="fix or unset the FEDCRM_* variable named above (every one: docs/reference/configuration.md)",
        ) from None


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, values: Mapping[str, Any] | None = None,
    **fields: Any,
) -> FedcrmConfig:
    """Parse a config file plus overrides into a validated ``FedcrmConfig``, once, at the boundary.

    Precedence, lowest first: the file, ``fields`` (top-level keys), the ``--set`` ``overrides`` (text
    parsed as YAML), then ``values``: typed values by dotted key, e.g. ``{"privacy.target_epsilon": 3.0}``
    from ``fedcrm run --epsilon 3``, which reach the model as the numbers they are (None = not given).
    Then the deployment settings of the environment (``DeploymentSettings``: ``FEDCRM_TRACKING_URI``, ...)
    fill in what none of those set; the defaults come last.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist", hint="pass an existing --config, or omit it") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a YAML mapping")
        data = loaded or {}
    data.update({k: v for k, v in fields.items() if v is not None})
    data = apply_overrides(data, overrides or [])
    for key, value in (values or {}).items():
        if value is not None:
            _assign(data, key, value, what=f"setting {key!r}")
    data = fill_unset(data, read_deployment_settings())
    try:
        return FedcrmConfig.model_validate(data)
    except ValidationError as exc:
        where = f"config {path}" if path else "configuration"
        raise ConfigError(
            f"{where} is invalid:\n{format_validation_error(exc)}",
            hint="fix the fields above (every key: docs/reference/configuration.md)",
        ) from None
