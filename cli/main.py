"""``fedcrm``: split data into regions, validate, and run federated jobs (embedded mode)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
import yaml
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cli.audit import audit_app
from cli.common import (
    ConfigOpt,
    ContractOpt,
    SetOpt,
    StateOpt,
    UseCaseOpt,
    console,
    errors,
    friendly_errors,
    parse_config,
)
from cli.drift import drift
from cli.environment import prepare_environment
from cli.report import report
from fedcrm.errors import FedcrmError

if TYPE_CHECKING:
    from fedcrm.config import FedcrmConfig
    from fedcrm.summary import GateOutcome, TrackingOutcome

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Federated lead scoring and churn across CRM regions.")
data_app = typer.Typer(no_args_is_help=True, help="Regional data stores (embedded stand-ins for regional CRMs).")
expectations_app = typer.Typer(no_args_is_help=True, help="Great Expectations suites generated from contracts.")
app.add_typer(data_app, name="data")
app.add_typer(expectations_app, name="expectations")
budget_app = typer.Typer(no_args_is_help=True, help="Each region's lifetime privacy budget (its ledger).")
app.add_typer(budget_app, name="budget")
keys_app = typer.Typer(no_args_is_help=True, help="Identity keys for secure aggregation (Ed25519, one per party).")
app.add_typer(keys_app, name="keys")

@data_app.command("split")
@friendly_errors
def data_split(
    use_case: UseCaseOpt = None,
    input_path: Annotated[Optional[Path], typer.Option("--input", "-i", help="Your CRM export (CSV/parquet); default: bundled data.")] = None,
    contract: ContractOpt = None,
    strategy: Annotated[Optional[str], typer.Option(help="column | dirichlet | covariate (default: column if the contract has a region column, else dirichlet).")] = None,
    regions: Annotated[str, typer.Option(help="Comma-separated region names for synthetic splits.")] = "eu,us,apac",
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration (smaller = more label skew).")] = 1.0,
    by: Annotated[Optional[str], typer.Option(help="Column for the covariate split.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic split.")] = 42,
    config: ConfigOpt = None,
    state_dir: StateOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Write one local store per region: the embedded stand-in for each regional CRM."""
    if strategy not in (None, "column", "dirichlet", "covariate"):
        raise FedcrmError(f"unknown strategy {strategy!r}", hint="use column, dirichlet or covariate")
    cfg = parse_config(config, use_case, contract, state_dir, overrides)
    names = tuple(r.strip() for r in regions.split(",") if r.strip())
    parts = _split_into_stores(cfg, input_path, names, strategy=strategy, seed=seed, alpha=alpha, by=by)
    if set(parts) != set(cfg.federation.regions) or input_path is not None or contract is not None:
        path = cfg.state_dir / f"{cfg.use_case}.yaml"
        document = {"use_case": cfg.use_case, "state_dir": str(cfg.state_dir), "federation": {"regions": sorted(parts)}}
        if cfg.contract:
            document["contract"] = str(cfg.contract)
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        console.print(f"Wrote config {path}. Next: [bold]fedcrm run --config {path}[/]")
    else:
        console.print(f"Next: [bold]fedcrm run --use-case {cfg.use_case}[/]")


def _split_into_stores(cfg: FedcrmConfig, input_path: Path | None, names: tuple[str, ...], *, strategy: str | None,
                       seed: int, alpha: float, by: str | None) -> list[str]:
    """Split an export (or the bundled data) into one local store per region, and provision the parties' keys."""
    from connectors import LocalFileSource, LocalRegionStore, load_bundled
    from fedcrm.catalog import RegionCatalog
    from fedcrm.split import partition

    spec = cfg.load_contract()
    if input_path is not None:
        source = LocalFileSource(input_path, separator=spec.source.separator, encoding=spec.source.encoding)
        raw, described = source.read_records(), source.description
    else:
        raw, described = load_bundled(cfg.use_case), f"bundled {cfg.use_case} data"
    spec.check_columns([str(c) for c in raw.columns], source=described)
    parts = partition(raw, spec, regions=names, strategy=strategy, seed=seed, alpha=alpha, by=by)  # type: ignore[arg-type]

    table = Table(title=f"{cfg.use_case}: {len(raw)} records from {described} → {len(parts)} regions")
    for column in ("region", "records", f"{spec.target.column}={spec.target.positive}", "store"):
        table.add_column(column, justify="right" if column != "store" else "left")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console, transient=True) as bar:
        job = bar.add_task("writing regional stores", total=len(parts))
        catalog = RegionCatalog(cfg.use_case)
        for region, frame in parts.items():
            store = LocalRegionStore(cfg.state_dir / "regions" / region)
            where = store.write_frame(catalog.records, frame)
            store.write_json(catalog.records_origin, {"origin": "export" if input_path else "bundled", "source": described})
            labels = frame[spec.target.column].astype("string").str.strip()
            rate = float((labels == spec.target.positive).mean()) if len(frame) else 0.0
            table.add_row(region, f"{len(frame)}", f"{rate:.1%}", where)
            bar.advance(job)
    console.print(table)
    stores = {**{r: cfg.state_dir / "regions" / r for r in parts}, "coordinator": cfg.coordinator_store}
    _print_identities(_provision_identities(cfg, stores, rotate=False), cfg.keyring_path)
    return list(parts)


def _is_a_fresh_demo(cfg: FedcrmConfig) -> bool:
    """An embedded job on the bundled data of a use case, with default regions and no regional store yet:
    what a first `fedcrm run` after installing looks like."""
    from connectors.bundled import BUNDLED

    regions = cfg.federation.regions.values()
    return (cfg.launcher.mode == "embedded" and cfg.use_case in BUNDLED and cfg.contract is None
            and all(r.source is None and r.store is None for r in regions)
            and not any(Path(cfg.region_source(name).path).exists() for name in cfg.federation.regions)
            and not Path(cfg.keyring_path).exists())


def _provision_identities(cfg: FedcrmConfig, stores: dict[str, Path | str], *,
                          rotate: bool) -> list[tuple[str, str, str, str, Path | str]]:
    """Create missing identity keys in each party's own store (a folder, s3:// or a database),
    add an encryption key to one made by an older fedcrm, and register them in the keyring."""
    from connectors.keys import create_identity, register
    from connectors.stores import open_store
    from fedcrm.secagg.identity import public_key_text

    done = []
    for party, root in stores.items():
        identity, status = create_identity(open_store(str(root)), party, rotate=rotate)
        register(cfg.keyring_path, identity)
        done.append((party, public_key_text(identity.public_key), public_key_text(identity.encryption_public_key),
                     status, root))
    return done


def _print_identities(rows: list[tuple[str, str, str, str, Path | str]], keyring: Path) -> None:
    table = Table(title=f"identity keys (keyring {keyring})")
    for column in ("party", "signing key (Ed25519)", "encryption key (X25519)", "status", "private keys in"):
        table.add_column(column)
    for party, key, encryption, status, root in rows:
        table.add_row(party, key, encryption, "encryption key added" if status == "upgraded" else status, str(root))
    console.print(table)


@budget_app.command("show")
@friendly_errors
def budget_show(
    config: ConfigOpt = None,
    use_case: UseCaseOpt = None,
    population: Annotated[Optional[str], typer.Option("--population", help="Default: privacy.population or the use case.")] = None,
    jobs: Annotated[bool, typer.Option("--jobs/--no-jobs", help="Also list the spend by use case and by job.")] = True,
    state_dir: StateOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Per region: budget, spent, reserved by running jobs and remaining ε, from its own ledger."""
    from connectors.ledger import read_ledger
    from connectors.stores import open_store

    cfg = parse_config(config, use_case, None, state_dir, overrides, values={"privacy.population": population or None})
    table = Table(title=f"privacy budget · population {cfg.population!r} (ε composed by the accountant at the ledger's δ)")
    for column in ("region", "budget", "spent", "reserved", "remaining", "open jobs", ""):
        table.add_column(column, justify="right" if column not in ("region", "open jobs", "") else "left")
    details = Table(title="spent by use case and by job")
    for column in ("region", "use case", "job", "ε spent", "state", "model version"):
        details.add_column(column, justify="right" if column == "ε spent" else "left")
    for region in cfg.federation.regions:
        ledger = read_ledger(open_store(cfg.region_store_location(region)), cfg.population)
        if ledger is None:
            table.add_row(region, f"{cfg.privacy.lifetime_epsilon:g}", "0.00", "0.00", f"{cfg.privacy.lifetime_epsilon:.2f}", "",
                          "no ledger yet (no private job has run)")
            continue
        status = ledger.status()
        table.add_row(region, f"{status.budget:g}", f"{status.spent:.2f}", f"{status.reserved:.2f}", f"{status.remaining:.2f}",
                      ", ".join(status.open_jobs), status.dashboard_line())
        for use, epsilon in ledger.by_use_case().items():
            details.add_row(region, use, "(all jobs)", f"{epsilon:.2f}", "")
        for job, (use, epsilon, still_open, model) in ledger.by_job().items():
            details.add_row(region, use, job, f"{epsilon:.2f}", "running / reserved" if still_open else "closed", model or "")
    console.print(table)
    if jobs and details.row_count:
        console.print(details)


@keys_app.command("init")
@friendly_errors
def keys_init(
    region: Annotated[Optional[list[str]], typer.Option("--region", "-r", help="Region to create a key for (repeatable).")] = None,
    coordinator: Annotated[bool, typer.Option("--coordinator", help="Create the coordinator's key.")] = False,
    all_parties: Annotated[bool, typer.Option("--all", help="Every configured region and the coordinator.")] = False,
    rotate: Annotated[bool, typer.Option("--rotate", help="Replace an existing key (the old one stops working).")] = False,
    config: ConfigOpt = None,
    use_case: UseCaseOpt = None,
    state_dir: StateOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Create a party's identity key in its own store and register its public key in the keyring.

    Each region runs this once, where its store lives; only the public key it prints goes into
    the federation's keyring (``secure_aggregation.keyring``).
    """
    cfg = parse_config(config, use_case, None, state_dir, overrides)
    names = list(cfg.federation.regions) if all_parties else list(region or [])
    unknown = [r for r in names if r not in cfg.federation.regions]
    if unknown:
        raise FedcrmError(f"region(s) {unknown} are not in federation.regions {list(cfg.federation.regions)}",
                          hint="add them to the config, or pass --config with the federation's config file")
    stores: dict[str, Path | str] = {r: cfg.region_store_location(r) for r in names}
    if coordinator or all_parties:
        stores["coordinator"] = cfg.coordinator_store
    if not stores:
        raise FedcrmError("no party given", hint="pass --region NAME (repeatable), --coordinator or --all")
    _print_identities(_provision_identities(cfg, stores, rotate=rotate), cfg.keyring_path)


@keys_app.command("show")
@friendly_errors
def keys_show(config: ConfigOpt = None, use_case: UseCaseOpt = None, state_dir: StateOpt = None, overrides: SetOpt = None) -> None:
    """The keyring, and whether each configured party holds the matching private key."""
    from connectors.keys import load_identity, read_keyring
    from connectors.stores import open_store
    from fedcrm.secagg.identity import public_key_text

    cfg = parse_config(config, use_case, None, state_dir, overrides)
    keyring = read_keyring(cfg.keyring_path)
    table = Table(title=f"keyring {cfg.keyring_path}")
    for column in ("party", "signing key (Ed25519)", "encryption key (X25519)", "private keys"):
        table.add_column(column)
    stores = {**{r: cfg.region_store_location(r) for r in cfg.federation.regions}, "coordinator": cfg.coordinator_store}
    for party in sorted(set(keyring.keys) | set(stores)):
        listed, encryption = keyring.keys.get(party), keyring.encryption_keys.get(party)
        status = "not local"
        if party in stores:
            try:
                identity = load_identity(open_store(str(stores[party])), party)
                status = "matches" if keyring.matches(identity) else "[red]MISMATCH[/]"
            except FedcrmError as exc:
                status = f"[red]{exc.message}[/]"
        flag = "--coordinator" if party == "coordinator" else f"--region {party}"
        table.add_row(party, public_key_text(listed) if listed else "[red]not registered[/]",
                      public_key_text(encryption) if encryption else f"[red]none: run `fedcrm keys init {flag}`[/]",
                      status)
    console.print(table)


@expectations_app.command("generate")
@friendly_errors
def expectations_generate(
    use_case: UseCaseOpt = None,
    contract: ContractOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the suite JSON (default: the configured expectations_dir, or ./expectations instead of the installed package's bundled suites).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Generate the GX expectation suite of a contract and store it as JSON."""
    from fedcrm.config import load_config
    from fedcrm.validation import write_suite

    cfg = load_config(config, overrides, use_case=use_case, contract=contract)
    from fedcrm.resources import BUNDLED_EXPECTATIONS

    # Never into the installed package: the bundled default becomes ./expectations (in the checkout's
    # root, the very folder the bundled suites link to).
    folder = out or (Path("expectations") if cfg.expectations_dir == BUNDLED_EXPECTATIONS else cfg.expectations_dir)
    path = write_suite(cfg.load_contract(), folder)
    console.print(f"Wrote expectation suite {path}")
    if folder.resolve() != Path(cfg.expectations_dir).resolve():
        console.print(f"Jobs read it with --set expectations_dir={folder}")


class _ProgressHandler(logging.Handler):
    """Turns the flow's progress log records into rich progress-bar updates."""

    def __init__(self, progress: Progress):
        super().__init__(logging.INFO)
        self.progress = progress
        self.bars: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        info = getattr(record, "fedcrm_progress", None)
        if not info:
            return
        stage = info["stage"]
        if stage not in self.bars:
            label = {"prepare": "validating regions & agreeing features", "train": "federated rounds",
                     "personalise": "personal rounds in each region"}.get(stage, stage)
            self.bars[stage] = self.progress.add_task(label, total=info["total"])
        self.progress.update(self.bars[stage], completed=info["done"], total=info["total"])


@app.command()
@friendly_errors
def validate(
    config: ConfigOpt = None,
    use_case: UseCaseOpt = None,
    contract: ContractOpt = None,
    state_dir: StateOpt = None,
    overrides: SetOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's log lines.")] = False,
) -> None:
    """Validate every region against the contract (inside each region) and show the report."""
    cfg = parse_config(config, use_case, contract, state_dir, overrides, verbose=verbose)
    from cli.launcher import run_embedded
    from flows.validation import validate_federation

    with console.status("validating regions inside each region…"):
        regions = run_embedded(validate_federation, cfg).result()
    table = Table(title=f"Validation: {cfg.use_case}")
    for column in ("region", "status", "records", "quarantined", "checks passed", "details"):
        table.add_column(column)
    for region, entry in regions.items():
        report = entry.validation
        passed = f"{sum(c.success for c in report.checks)}/{len(report.checks)}" if report and report.checks else "-"
        details = entry.reason or "; ".join(report.warnings if report else []) or "ok"
        style = "green" if entry.status == "included" else "red"
        table.add_row(region, f"[{style}]{'pass' if entry.status == 'included' else 'FAIL'}[/]",
                      _count(report.n_rows) if report else "-", _count(entry.n_quarantined), passed, details)
    console.print(table)
    if any(e.status == "excluded" for e in regions.values()):
        raise typer.Exit(1)


@app.command()
@friendly_errors
def run(
    config: ConfigOpt = None,
    use_case: UseCaseOpt = None,
    contract: ContractOpt = None,
    state_dir: StateOpt = None,
    overrides: SetOpt = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", help="Federated rounds (= --set training.rounds=N).")] = None,
    epsilon: Annotated[Optional[float], typer.Option("--epsilon", help="Each region's total ε for the job (= --set privacy.target_epsilon=E).")] = None,
    json_summary: Annotated[Optional[Path], typer.Option("--json-summary", help="Write the machine-readable job summary here.")] = None,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", metavar="JOB_ID",
        help="Go on with a job whose coordinator died, from its last completed round (same configuration; "
             "nothing is reserved or spent twice).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's log lines.")] = False,
) -> None:
    """Run the federated training job end to end and print per-region results."""
    cfg = parse_config(config, use_case, contract, state_dir, overrides, verbose=verbose,
                  values={"training.rounds": rounds, "privacy.target_epsilon": epsilon})
    from fedcrm.validation import load_suite_dict

    spec = cfg.load_contract()
    load_suite_dict(spec, cfg.expectations_dir)  # fail fast on a bad contract or stale suite, before Prefect starts
    if resume is None and _is_a_fresh_demo(cfg):
        console.print(f"No regional stores yet under {cfg.state_dir}: splitting the bundled {cfg.use_case} data into "
                      f"{', '.join(cfg.federation.regions)} first (as `fedcrm data split` does)")
        _split_into_stores(cfg, None, tuple(cfg.federation.regions), strategy=None, seed=42, alpha=1.0, by=None)
    if cfg.secure_aggregation.enabled:  # and on what secure aggregation needs: public bounds and the coordinator's key
        from connectors import LocalRegionStore
        from connectors.keys import check_registered, load_identity, read_keyring
        from fedcrm.regional import statistics_codec_bounds

        statistics_codec_bounds(cfg, spec)
        check_registered(read_keyring(cfg.keyring_path), load_identity(LocalRegionStore(cfg.coordinator_store), "coordinator"))
    from cli.launcher import run_embedded
    from flows.training import federated_training

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    handler = _ProgressHandler(progress)
    flow_logger = logging.getLogger("prefect.flow_runs")
    flow_logger.addHandler(handler)
    try:
        with progress:
            starting = progress.add_task("starting Prefect (embedded)", total=None)
            handler.bars["start"] = starting
            state = run_embedded(federated_training, cfg, job_id=resume, resume=resume is not None)
            progress.update(starting, total=1, completed=1)
    finally:
        flow_logger.removeHandler(handler)
    summary = state.result(raise_on_failure=False)
    if not hasattr(summary, "job_id"):
        raise FedcrmError(f"the training flow ended {state.type.value} without a summary: {state.message}",
                          hint="re-run with --verbose to see Prefect's log")
    _print_summary(summary)
    if json_summary is not None:
        json_summary.parent.mkdir(parents=True, exist_ok=True)
        json_summary.write_text(json.dumps(summary.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
        console.print(f"summary written to {json_summary}")
    if summary.status != "completed":
        errors.print(f"[bold red]job failed:[/] {summary.error}", highlight=False)
        raise typer.Exit(1)


@app.command()
@friendly_errors
def track(
    job_id: Annotated[str, typer.Argument(help="Job id printed by `fedcrm run` (see .fedcrm/coordinator/jobs/).")],
    config: ConfigOpt = None,
    use_case: UseCaseOpt = None,
    state_dir: StateOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Register a finished job's saved model in MLflow (e.g. after the tracking server was down)."""
    from connectors.tracking import MlflowTracker
    from fedcrm.summary import JobSummary, TrackingOutcome

    cfg = parse_config(config, use_case, None, state_dir, overrides)
    folder = cfg.state_dir / "coordinator" / "jobs" / job_id
    if not (folder / "model.json").is_file():
        raise FedcrmError(f"no saved model for job {job_id!r} in {folder}", hint="check the job id and --state-dir")
    summary = JobSummary.model_validate(json.loads((folder / "summary.json").read_text(encoding="utf-8")))
    result = MlflowTracker(cfg.tracking_uri, artifact_root=cfg.state_dir / "mlartifacts").log_job(
        folder, experiment=cfg.experiment_name, model_name=cfg.model_name
    )
    summary.tracking = TrackingOutcome(status="registered", **result.model_dump())
    (folder / "summary.json").write_text(json.dumps(summary.model_dump(mode="json"), indent=2), encoding="utf-8")
    _print_tracking(job_id, summary.tracking)


@app.command()
@friendly_errors
def models(config: ConfigOpt = None, use_case: UseCaseOpt = None, state_dir: StateOpt = None,
           overrides: SetOpt = None) -> None:
    """The registered model's versions: aliases, gate result, approval, global AUC and ε per region."""
    from datetime import datetime, timezone

    from connectors.tracking import ModelRegistry

    cfg = parse_config(config, use_case, None, state_dir, overrides)
    rows = ModelRegistry(cfg.tracking_uri, cfg.model_name).versions()
    if not rows:
        console.print(f"no versions of {cfg.model_name} yet: run [bold]fedcrm run --use-case {cfg.use_case}[/]")
        return
    table = Table(title=f"{cfg.model_name} ({cfg.tracking_uri.split('://')[0]})")
    for column in ("version", "aliases", "gates", "approval", "global AUC", "ε spent per region", "job", "registered"):
        table.add_column(column)
    for row in rows:
        gate = {"passed": "[green]passed[/]", "failed": "[red]failed[/]"}.get(row.gate_status, row.gate_status)
        when = datetime.fromtimestamp(row.created_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M") if row.created_ms else ""
        table.add_row(row.version, ", ".join(row.aliases) or "-", gate, row.decision or "-", row.global_auc or "-",
                      ", ".join(f"{r} {e}" for r, e in row.epsilon_spent.items()) or "-", row.job_id, when)
    console.print(table)


ApproverOpt = Annotated[str, typer.Option("--approver", help="Who decides (recorded on the model version).")]
CommentOpt = Annotated[str, typer.Option("--comment", help="Why (recorded on the model version).")]


@app.command()
@friendly_errors
def promote(
    version: Annotated[Optional[str], typer.Option("--version", help="Default: the current challenger.")] = None,
    config: ConfigOpt = None, use_case: UseCaseOpt = None, state_dir: StateOpt = None, overrides: SetOpt = None,
) -> None:
    """Ask for approval of a version whose gates passed; on approval it becomes the champion.

    The run waits for `fedcrm approve RUN` / `fedcrm reject RUN` (or the form in the Prefect UI).
    """
    from cli.launcher import run_embedded
    from flows.promotion import promote_model

    cfg = parse_config(config, use_case, None, state_dir, overrides)
    handler = _WaitingHandler()
    logging.getLogger("prefect.flow_runs").addHandler(handler)
    try:
        state = run_embedded(promote_model, cfg, version=version)
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(handler)
    decision = state.result(raise_on_failure=False)
    if not hasattr(decision, "decision") and "never resumed" in (state.message or ""):
        errors.print(f"[red]no decision within approval.timeout_s ({cfg.approval.timeout_s} s): counted as a rejection[/]",
                     highlight=False)
        raise typer.Exit(1)
    if not hasattr(decision, "decision"):
        raise FedcrmError(f"promotion ended {state.type.value}: {state.message}", hint="see `fedcrm models`")
    colour = "green" if decision.decision == "approved" else "red"
    console.print(f"version {decision.version} [{colour}]{decision.decision}[/] by {decision.approver}"
                  f"{': ' + decision.comment if decision.comment else ''}; champion: {decision.champion or 'none'}",
                  highlight=False)
    if decision.decision != "approved":
        raise typer.Exit(1)


class _WaitingHandler(logging.Handler):
    """Shows the approval instructions the promotion flow logs while it waits."""

    def emit(self, record: logging.LogRecord) -> None:
        if "waits for approval" in record.getMessage():
            console.print(record.getMessage(), highlight=False, soft_wrap=True)  # ids stay copyable


def _decide(run: str, decision: str, approver: str, comment: str) -> None:
    from uuid import UUID

    from prefect.exceptions import NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    try:
        flow_run_id = UUID(run)
    except ValueError:
        raise FedcrmError(f"{run!r} is not a flow run id", hint="use the id the promotion printed") from None
    deadline = time.monotonic() + 30  # a run that has just asked may still be pausing
    try:
        while True:
            try:
                resume_flow_run(flow_run_id, run_input={"decision": decision, "approver": approver, "comment": comment})
                break
            except NotPausedError:
                if time.monotonic() > deadline:
                    raise FedcrmError(f"run {run} is not waiting for a decision",
                                      hint="it was decided already, timed out, or is not a promotion run") from None
                time.sleep(1)
    except ObjectNotFound:
        raise FedcrmError(f"no flow run {run}", hint="check the id, and that PREFECT_API_URL/--state-dir match") from None
    except RuntimeError as exc:  # Prefect: the input did not validate, or the run is not waiting
        raise FedcrmError(f"the decision was not accepted: {exc}",
                          hint="the run keeps waiting; give --approver (non-empty) and retry") from None
    console.print(f"{decision} sent to run {run} by {approver}", highlight=False)


@app.command()
@friendly_errors
def approve(run: Annotated[str, typer.Argument(help="The waiting promotion run's id.")], approver: ApproverOpt,
            comment: CommentOpt = "", state_dir: StateOpt = None) -> None:
    """Approve the version a promotion run waits on: it becomes the champion."""
    prepare_environment(state_dir or Path(".fedcrm"))
    _decide(run, "approve", approver, comment)


@app.command()
@friendly_errors
def reject(run: Annotated[str, typer.Argument(help="The waiting promotion run's id.")], approver: ApproverOpt,
           comment: CommentOpt = "", state_dir: StateOpt = None) -> None:
    """Reject the version a promotion run waits on: nothing is deployed."""
    prepare_environment(state_dir or Path(".fedcrm"))
    _decide(run, "reject", approver, comment)


@app.command()
@friendly_errors
def rollback(
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded on both versions).")],
    to: Annotated[Optional[str], typer.Option("--to", help="The version to restore. Default: the one the champion replaced.")] = None,
    by: Annotated[str, typer.Option("--by", help="Who rolls back. Default: $USER.")] = os.environ.get("USER", "unknown"),
    config: ConfigOpt = None, use_case: UseCaseOpt = None, state_dir: StateOpt = None, overrides: SetOpt = None,
) -> None:
    """Move the champion back in one command, recording who, when and why."""
    from cli.launcher import run_embedded
    from flows.rollback import rollback_model

    cfg = parse_config(config, use_case, None, state_dir, overrides)
    state = run_embedded(rollback_model, cfg, by=by, reason=reason, to_version=to)
    decision = state.result(raise_on_failure=False)
    if not hasattr(decision, "champion"):
        raise FedcrmError(f"rollback ended {state.type.value}: {state.message}", hint="see `fedcrm models`")
    console.print(f"champion is now version {decision.champion} (rolled back by {by}: {reason})", highlight=False)


@app.command()
@friendly_errors
def score(
    regions: Annotated[Optional[list[str]], typer.Option("--region", "-r", help="Only these regions (repeatable).")] = None,
    config: ConfigOpt = None, use_case: UseCaseOpt = None, state_dir: StateOpt = None, overrides: SetOpt = None,
) -> None:
    """Score each region's consenting records with the champion and write the scores back (counts only)."""
    from cli.launcher import run_embedded
    from flows.scoring import batch_scoring

    cfg = parse_config(config, use_case, None, state_dir, overrides)
    unknown = sorted(set(regions or []) - set(cfg.federation.regions))
    if unknown:
        raise typer.BadParameter(f"unknown region(s) {unknown}", param_hint="--region")
    state = run_embedded(batch_scoring, cfg, regions=regions)
    results = state.result(raise_on_failure=False)
    if not isinstance(results, dict):
        raise FedcrmError(f"scoring ended {state.type.value}: {state.message}", hint="see the flow run's logs")
    table = Table(title=f"batch scoring · {cfg.model_name}@{cfg.scoring.model_alias}")
    for column in ("region", "version", "read", "malformed", "no consent", "scored", "written", "failed", "destination"):
        table.add_column(column, justify="left" if column in ("region", "destination") else "right")
    for region, outcome in results.items():
        counts = outcome.counts
        if counts is not None:
            table.add_row(region, counts.model_version, *(_count(n) for n in (
                counts.read, counts.malformed, counts.no_consent, counts.scored, counts.written, counts.failed)),
                counts.destination)
        elif outcome.ok:  # a deployment run on the region's pool: its counts are in its own logs
            table.add_row(region, *["-"] * 7, f"flow run {outcome.flow_run} completed (counts in its logs)")
        else:
            table.add_row(region, *["-"] * 7, f"[red]{outcome.reason}[/]")
    console.print(table)
    if not all(outcome.ok for outcome in results.values()):
        raise typer.Exit(1)


def _count(value: int | None) -> str:
    """A released count: None means fewer than privacy.min_k (the exact value stays in the region)."""
    return "< k" if value is None else str(value)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_summary(summary: Any) -> None:
    from fedcrm.summary import CentralReference, SkippedBaseline

    table = Table(title=f"fedcrm {summary.use_case} · job {summary.job_id} · {summary.status}")
    columns = ("region", "status", "train", "holdout", "quar.", "AUC", "personal.", "local-only", "central*", "PR-AUC", "Brier",
               "ECE", "ε spent")
    for column in columns:
        table.add_column(column, justify="left" if column in ("region", "status") else "right", no_wrap=True)
    notes = []
    for region, entry in summary.regions.items():
        m = entry.metrics
        if entry.status == "excluded":
            notes.append(f"[red]{region}[/] excluded at {entry.excluded_at}: {entry.reason}")
        elif entry.validation and entry.validation.warnings:
            notes.append(f"[yellow]{region}[/] " + "; ".join(entry.validation.warnings))
        style = "green" if entry.status == "included" else "red"
        eps = "-" if entry.epsilon_spent is None else f"{entry.epsilon_spent:.2f}/{entry.privacy_plan.target_epsilon:g}"
        if entry.epsilon_spent is not None and summary.privacy.epsilon_warning:
            eps = f"[red]{eps} (void)[/]"  # seeded randomness: the accountant's ε is not a guarantee
        own = entry.personalisation
        personal = "-" if own is None else _fmt(own.personalised_metrics.auc)
        if own is not None and own.chosen == "personalised":
            personal = f"[bold green]{personal}[/]"
        table.add_row(region, f"[{style}]{entry.status}[/]", _count(entry.n_train), _count(entry.n_holdout), _count(entry.n_quarantined),
                      _fmt(m and m.auc), personal, _fmt(entry.local_only and entry.local_only.auc),
                      _fmt(entry.central_reference and entry.central_reference.auc),
                      _fmt(m and m.pr_auc), _fmt(m and m.brier), _fmt(m and m.ece), eps)
    g = summary.metrics
    if g is not None:
        local, central = summary.baselines.local_only, summary.baselines.central_reference
        table.add_row("[bold]global[/]", "", "", str(g.n), "", _fmt(g.auc), "", _fmt(getattr(local, "auc", None)),
                      _fmt(getattr(central, "auc", None)),
                      _fmt(g.pr_auc), _fmt(g.brier), _fmt(g.ece), "")
        notes.append(f"global = example-weighted over regional holdouts; largest regional AUC gap {g.auc_gap:.4f}")
    personalised = [r for r, e in summary.regions.items() if e.personalisation and e.personalisation.chosen == "personalised"]
    if any(e.personalisation for e in summary.regions.values()):
        notes.append("personal. = the global model trained further on the region's own rows, inside the job's ε; kept "
                     f"where better on the region's holdout (in bold): {', '.join(personalised) or 'nowhere'}")
    notes.extend(f"[yellow]{r}[/] keeps the global model: its personal step failed: {e.personalisation_failed}"
                 for r, e in summary.regions.items() if e.personalisation_failed)
    console.print(table)
    for note in notes:
        console.print(f"  • {note}", highlight=False)
    central = summary.baselines.central_reference
    if isinstance(central, CentralReference):
        console.print(f"  * {central.label}", highlight=False)
    elif isinstance(central, SkippedBaseline):
        console.print(f"  * central reference skipped: {central.skipped}", highlight=False)
    totals = {r: e.epsilon_job_total for r, e in summary.regions.items() if e.epsilon_job_total is not None}
    if totals:
        console.print("  • ε spent by this job in total (federated, local-only baseline and feature statistics, composed): "
                      + ", ".join(f"{r} {v:.2f}" for r, v in totals.items()), highlight=False)
    budgets = {r: e.privacy_budget.dashboard for r, e in summary.regions.items() if e.privacy_budget}
    if budgets:
        console.print("  • lifetime (`fedcrm budget show`): " + "; ".join(f"{r} {line}" for r, line in budgets.items()),
                      highlight=False)
    if summary.privacy.epsilon_warning:
        console.print(f"[bold red]ε (void): {summary.privacy.epsilon_warning}[/]", highlight=False)
    console.print(f"[dim]{summary.privacy.note}[/]")
    _print_tracking(summary.job_id, summary.tracking)
    _print_gates(summary.gates)


def _print_gates(gates: GateOutcome) -> None:
    if gates.status == "passed":
        where = " → alias [bold]challenger[/], awaiting approval" if gates.challenger else ""
        console.print(f"Gates: [green]passed[/] ({len(gates.rules)} rules){where}", highlight=False)
    elif gates.status == "failed":
        console.print("Gates: [red]failed[/]: this version goes no further", highlight=False)
        for rule in gates.rules:
            if not rule.passed:
                console.print(f"  ✗ {rule.line()}", highlight=False)


def _print_tracking(job_id: str, tracking: TrackingOutcome) -> None:
    if tracking.registered:
        console.print(
            f"MLflow: registered [bold]{tracking.model_name}[/] version [bold]{tracking.model_version}[/] "
            f"(run {tracking.run_id}). Open the UI: [bold]{tracking.ui_command}[/]",
            highlight=False,
        )
    elif tracking.status == "failed":
        errors.print(f"[yellow]MLflow registration failed; the model is saved.[/] {tracking.error}", highlight=False)
        errors.print(f"[yellow]→ retry with: fedcrm track {job_id}[/]", highlight=False)


app.add_typer(audit_app, name="audit")
app.command("report")(friendly_errors(report))
app.command()(drift)


def main() -> None:  # pragma: no cover - console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
