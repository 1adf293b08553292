"""Quality benchmark: federated DP vs the centralized ceiling, local-only and non-private FedAvg.

    .venv/bin/python benchmarks/quality.py [--use-case lead-scoring churn] [--split dirichlet-0.5 dirichlet-1.0 covariate]
        [--learner mlp boosted_trees] [--seeds 0 1 2] [--epsilons 0.5 1 3 8] [--step-times]

For each bundled use case and region split (three regions: Dirichlet label skew α = 0.5 or 1.0, or a
covariate split by the contract's first categorical column with ≥ 3 levels; seed 42), the contract's features and
each learner with its defaults (``training.*``; ε = ∞ is the non-private row). All methods are
scored on the same regional holdouts (example-weighted global AUC), after training on the same rows.

Reference runs beside the federated ones:

* ceiling: the best of logistic regression, gradient boosting and the MLP, each trained
  non-privately on the pooled training rows (what the law forbids);
* local-only: each region trains alone, with the same ε as the federated row it is compared to;
* federated non-private (plain FedAvg) and federated DP at each ε (δ = 1e-5, PRV accountant).

It prints AUC mean ± sd over the seeds, the ratio to the ceiling, whether the federated model is
at least as good as local-only in every region (within one sd), and DP-SGD step times against
plain SGD and against Opacus' own ``PrivacyEngine.make_private`` path. No Prefect: maths only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from connectors import load_bundled
from fedcrm.aggregation import AggregateResult, PlainSumAggregator
from fedcrm.config import load_config
from fedcrm.evaluation import combine_metrics, evaluate_predictions
from fedcrm.features import FeaturePipeline
from fedcrm.learners import make_learner
from fedcrm.model import build_model
from fedcrm.records import TARGET
from fedcrm.regional import (
    baseline_spec, feature_statistics, local_evaluation, local_round, prepare_region, privacy_plan, public_row_count,
)
from fedcrm.split import partition
from fedcrm.strategies import make_strategy
from fedcrm.validation import build_suite_dict


SPLITS = {"dirichlet-0.5": dict(strategy="dirichlet", alpha=0.5), "dirichlet-1.0": dict(strategy="dirichlet", alpha=1.0),
          "covariate": dict(strategy="covariate")}


def _setup(use_case: str, overrides: list[str], split: str = "dirichlet-1.0"):
    config = load_config(use_case=use_case, overrides=["tracking.enabled=false", *overrides])
    contract = config.load_contract()
    how = dict(SPLITS[split])
    if how["strategy"] == "covariate":  # the contract's first categorical column with at least one level per region
        how["by"] = next(c for c, spec in contract.categorical.items() if len(spec.vocabulary) >= 3)
    parts = partition(load_bundled(use_case), contract, seed=42, **how)
    suite = build_suite_dict(contract)
    regions = {r: prepare_region(df, contract, config, region=r, suite=suite, source=r) for r, df in parts.items()}
    unusable = [r for r, p in regions.items() if not p.usable]
    if unusable:
        raise SystemExit(f"{use_case} / {split}: region(s) {unusable} fail validation: "
                         + "; ".join(f for r in unusable for f in regions[r].report.failures))
    stats = {r: feature_statistics(p.train, contract, min_k=config.privacy.min_k) for r, p in regions.items()}
    pipeline = FeaturePipeline.fit(contract, PlainSumAggregator().sum(stats), clip_z=config.features.clip_z)
    return config, regions, pipeline


def _with(config, learner: str | None = None, **privacy):
    update = {"privacy": config.privacy.model_copy(update=privacy)}
    if learner is not None:
        update["training"] = config.training.model_copy(update={"learner": learner})
    return config.model_copy(update=update)


def _seeded(config, seed: int):
    return config.model_copy(update={"training": config.training.model_copy(update={"seed": seed})})


def _scores(regions, pipeline, vectors, config) -> dict[str, float]:
    per_region = {r: local_evaluation(p.holdout, pipeline, vectors[r], config) for r, p in regions.items()}
    return {"global": combine_metrics(per_region).auc, **{r: m.auc for r, m in per_region.items()}}


def _start(config, regions, pipeline, plans) -> np.ndarray:
    """The learner's initial model from the public facts the job gives it (released rows, the plans' σ)."""
    rows = [public_row_count(len(p.train), config) for p in regions.values()]
    sigmas = [plan.noise_multiplier for plan in plans.values() if plan is not None]
    return make_learner(config).initial(pipeline, rows, max(sigmas) if sigmas else None)


def federated(config, regions, pipeline, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """The job's round loop without orchestration: every region trains, the learner packs its contribution,
    a plain sum stands for secure aggregation (same total), the learner steps the global model. Then each
    region's personal rounds (``training.personal_rounds``, inside the same plan) and its choice on its holdout,
    as ``RegionSession.personalise`` makes it. Returns the global model's AUCs and those of what each region keeps."""
    config = _seeded(config, seed)
    learner, strategy, aggregator = make_learner(config), make_strategy(config.strategy), PlainSumAggregator()
    plans = {r: privacy_plan(len(p.train), config, region=r) for r, p in regions.items()}
    vector = _start(config, regions, pipeline, plans)
    for number in range(1, config.training.rounds + 1):
        packed = {}
        for r, p in regions.items():
            update = learner.train(p.train, pipeline, vector, plan=plans[r], seed=seed * 100_003 + number)
            packed[r] = learner.contribution(vector, update, public_row_count(update.n_examples, config))
        total = aggregator.sum(packed)
        result = AggregateResult(total=total, contributors=list(regions), dropped={}, error_bound=np.zeros(total.size))
        vector = learner.next_model(strategy, aggregator, vector, result)[0]
    kept = {r: vector for r in regions}
    for r, p in regions.items():
        own = vector
        for personal_round in range(1, config.training.personal_rounds + 1):
            own = learner.train(p.train, pipeline, own, plan=plans[r],
                                seed=seed * 100_003 + config.training.rounds + personal_round).vector
        if local_evaluation(p.holdout, pipeline, own, config).auc > local_evaluation(p.holdout, pipeline, vector, config).auc:
            kept[r] = own
    return _scores(regions, pipeline, {r: vector for r in regions}, config), _scores(regions, pipeline, kept, config)


def local_only(config, regions, pipeline, seed: int) -> dict[str, float]:
    config = _seeded(config, seed)
    alone = baseline_spec(config)
    plans = {r: privacy_plan(len(p.train), config, region=r) for r, p in regions.items()}
    start = _start(config, regions, pipeline, plans)
    vectors = {r: local_round(p.train, pipeline, start, alone, seed=seed, plan=privacy_plan(len(p.train), alone, region=r)).vector
               for r, p in regions.items()}
    return _scores(regions, pipeline, vectors, config)


def ceiling(config, regions, pipeline, seed: int) -> dict[str, dict[str, float]]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    pooled = pd.concat([p.train for p in regions.values()], ignore_index=True)
    plain = _seeded(_with(config, "mlp", mode="off"), seed)
    mlp = local_round(pooled, pipeline, make_learner(plain).initial(pipeline), baseline_spec(plain), seed=seed).vector
    results = {"mlp": _scores(regions, pipeline, {r: mlp for r in regions}, plain)}
    x, y = pipeline.transform(pooled), pooled[TARGET].to_numpy()
    for name, model in (("logistic", LogisticRegression(max_iter=2000)), ("gbm", HistGradientBoostingClassifier(random_state=seed))):
        model.fit(x, y)
        per_region = {
            r: evaluate_predictions(p.holdout[TARGET].to_numpy(), model.predict_proba(pipeline.transform(p.holdout))[:, 1],
                                    min_k=config.privacy.min_k)
            for r, p in regions.items()
        }
        results[name] = {"global": combine_metrics(per_region).auc, **{r: m.auc for r, m in per_region.items()}}
    return results


def step_times(config, regions, pipeline) -> dict[str, float]:
    """Seconds per optimiser step on the largest region: plain SGD, our DP-SGD, Opacus' make_private."""
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    region = max(regions, key=lambda r: len(regions[r].train))
    train = regions[region].train
    plan = privacy_plan(len(train), config, region=region)
    start = make_learner(config).initial(pipeline)
    timings = {}
    for name, chosen in (("sgd", None), ("dp-sgd", plan)):
        local_round(train, pipeline, start, config, seed=0, plan=chosen)  # warm-up
        began = time.perf_counter()
        update = local_round(train, pipeline, start, config, seed=0, plan=chosen)
        timings[name] = (time.perf_counter() - began) / update.steps
    x = torch.from_numpy(pipeline.transform(train))
    y = torch.from_numpy(train[TARGET].to_numpy(dtype=np.float32))
    model = build_model(pipeline.n_features, config.training.hidden_sizes)
    optimiser = torch.optim.SGD(model.parameters(), lr=config.training.learning_rate)
    loader = DataLoader(TensorDataset(x, y), batch_size=config.training.batch_size)
    model, optimiser, loader = PrivacyEngine().make_private(
        module=model, optimizer=optimiser, data_loader=loader, noise_multiplier=plan.noise_multiplier, max_grad_norm=1.0
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for epoch in range(2):  # the first epoch is the warm-up
        steps, began = 0, time.perf_counter()
        for xb, yb in loader:
            steps += 1
            if len(xb) == 0:
                continue
            optimiser.zero_grad()
            loss_fn(model(xb).reshape(-1), yb).backward()
            optimiser.step()
    timings["opacus-make_private"] = (time.perf_counter() - began) / steps
    return timings


def _fmt(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def run(use_case: str, split: str, learners: list[str], seeds: list[int], epsilons: list[float],
        overrides: list[str], timings: bool) -> dict:
    """Print the table of one use case and split; returns its results (for ``--json`` and ``--plot``)."""
    config, regions, pipeline = _setup(use_case, overrides, split)
    rows: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, list[float]] = {}
    for seed in seeds:
        for name, result in ceiling(config, regions, pipeline, seed).items():
            rows.setdefault(f"ceiling: {name} (pooled, non-private)", []).append(result)
        for learner in learners:
            for eps in [None, *epsilons]:
                label = "non-private" if eps is None else f"DP ε={eps:g}"
                chosen = _with(config, learner, mode="off") if eps is None else _with(config, learner, target_epsilon=eps)
                rows.setdefault(f"{learner} local-only, {label}", []).append(local_only(chosen, regions, pipeline, seed))
                began = time.perf_counter()
                shared, kept = federated(chosen, regions, pipeline, seed)
                seconds.setdefault(learner, []).append(time.perf_counter() - began)
                rows.setdefault(f"{learner} federated, {label}", []).append(shared)
                if chosen.training.personal_rounds:
                    rows.setdefault(f"{learner} kept (global or personal), {label}", []).append(kept)
    ceilings = {k: statistics.mean(r["global"] for r in v) for k, v in rows.items() if k.startswith("ceiling")}
    best = max(ceilings, key=ceilings.get)
    print(f"\n== {use_case} / split {split}: {sum(len(p.train) for p in regions.values())} training records in "
          f"{len(regions)} regions, seeds {seeds}; ceiling = {best} ({ceilings[best]:.4f}), same train/holdout rows")
    print(f"{'method':<52} {'global AUC (mean ± sd)':>24} {'÷ ceiling':>10}   per-region AUC")
    for name, results in rows.items():
        glob = [r["global"] for r in results]
        per = "  ".join(f"{r} {statistics.mean(x[r] for x in results):.3f}" for r in regions)
        print(f"{name:<52} {_fmt(glob):>24} {statistics.mean(glob) / ceilings[best]:>10.4f}   {per}")
    for learner in learners:
        for eps in [None, *epsilons]:
            label = "non-private" if eps is None else f"DP ε={eps:g}"
            alone = rows[f"{learner} local-only, {label}"]
            for what in ("federated", "kept (global or personal)"):
                if f"{learner} {what}, {label}" not in rows:
                    continue
                verdicts = []
                for r in regions:
                    f, a = [x[r] for x in rows[f"{learner} {what}, {label}"]], [x[r] for x in alone]
                    sd = statistics.stdev(f) if len(f) > 1 else 0.0
                    verdicts.append(f"{r} {'yes' if statistics.mean(f) >= statistics.mean(a) - sd else 'NO'} "
                                    f"({statistics.mean(f) - statistics.mean(a):+.3f})")
                print(f"{learner} {what} ≥ local-only in every region (within 1 sd), {label}: {', '.join(verdicts)}")
    print("seconds per federated run (median): " + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in seconds.items()))
    result = {"use_case": use_case, "split": split, "ceiling": {"label": best, "auc": ceilings[best]},
              "rows": {name: [r["global"] for r in results] for name, results in rows.items()},
              "seconds": seconds}
    if timings:
        times = step_times(_with(config, "mlp"), regions, pipeline)
        print("DP-SGD step time (ms): " + ", ".join(f"{k} {v * 1000:.2f}" for k, v in times.items())
              + f"; ratio dp-sgd/sgd {times['dp-sgd'] / times['sgd']:.2f}, dp-sgd/opacus {times['dp-sgd'] / times['opacus-make_private']:.2f}")
    return result


def _curve(rows: dict[str, list[float]], learner: str, where: str) -> tuple[list[float], list[float], float | None]:
    """(ε values, mean AUCs) of a learner's ``where`` rows (federated / local-only), and its non-private AUC."""
    points = []
    for name, values in rows.items():
        if name.startswith(f"{learner} {where}, DP ε="):
            points.append((float(name.rsplit("=", 1)[1]), statistics.mean(values)))
    free = rows.get(f"{learner} {where}, non-private")
    points.sort()
    return [e for e, _ in points], [a for _, a in points], (statistics.mean(free) if free else None)


def plot(results: list[dict], path: Path) -> None:
    """AUC ÷ the same-split ceiling against ε, per learner (federated solid, local-only dashed), one panel
    per use case and split; the non-private federated value as a dotted line."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_cases = list(dict.fromkeys(r["use_case"] for r in results))
    splits = list(dict.fromkeys(r["split"] for r in results))
    figure, axes = plt.subplots(len(use_cases), len(splits), figsize=(4.2 * len(splits), 3.4 * len(use_cases)),
                                squeeze=False, sharey=True)
    colours = {"mlp": "tab:blue", "boosted_trees": "tab:orange"}
    for result in results:
        axis = axes[use_cases.index(result["use_case"])][splits.index(result["split"])]
        ceiling = result["ceiling"]["auc"]
        for learner, colour in colours.items():
            for where, style in (("federated", "-"), ("local-only", "--")):
                eps, auc, free = _curve(result["rows"], learner, where)
                if eps:
                    axis.plot(eps, [a / ceiling for a in auc], style, marker="o", color=colour, label=f"{learner} {where}")
                if free is not None and where == "federated":
                    axis.axhline(free / ceiling, color=colour, linestyle=":", linewidth=1)
        axis.axhline(0.98, color="grey", linewidth=0.8)
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xticks([0.5, 1, 3, 8])
        axis.set_title(f"{result['use_case']} / {result['split']}", fontsize=9)
        axis.set_xlabel("ε per region (δ = 1e-5)")
    for row in axes:
        row[0].set_ylabel("global AUC ÷ same-split ceiling")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def log_to_mlflow(results: list[dict], plot_path: Path | None, tracking_uri: str) -> str:
    """The benchmark as an MLflow run (experiment ``fedcrm-benchmarks``): each row's mean AUC and ratio as
    metrics, the results JSON and the plot as artifacts. Returns the run id."""
    import tempfile

    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("fedcrm-benchmarks")
    with mlflow.start_run(run_name="quality") as run:
        for result in results:
            prefix = f"{result['use_case']}.{result['split']}"
            ceiling = result["ceiling"]["auc"]
            mlflow.log_metric(f"{prefix}.ceiling_auc", ceiling)
            for name, values in result["rows"].items():
                key = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{prefix}.{name}")
                mlflow.log_metric(f"{key}.ratio", statistics.mean(values) / ceiling)
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "quality.json"
            target.write_text(json.dumps(results, indent=2))
            mlflow.log_artifact(str(target))
        if plot_path is not None:
            mlflow.log_artifact(str(plot_path))
        return run.info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--use-case", nargs="+", default=["lead-scoring", "churn"])
    parser.add_argument("--split", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--learner", nargs="+", default=["mlp", "boosted_trees"], choices=["mlp", "boosted_trees"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0, 3.0, 8.0])
    parser.add_argument("--step-times", action="store_true", help="also time DP-SGD steps against SGD and Opacus")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--merge", type=Path, nargs="+", default=[],
                        help="results JSON files of earlier runs (e.g. one per learner) to plot with these")
    parser.add_argument("--plot", type=Path, help="write the AUC-vs-ε plot here (e.g. docs/quality-vs-epsilon.png)")
    parser.add_argument("--tracking-uri", help="also log the results and the plot as an MLflow run here")
    parser.add_argument("--no-run", action="store_true", help="only plot / log the --merge files")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    results: list[dict] = []
    if not args.no_run:
        print(f"config overrides: {args.overrides or 'none (defaults)'}")
        for use_case in args.use_case:
            for split in args.split:
                results.append(run(use_case, split, args.learner, args.seeds, args.epsilons, args.overrides, args.step_times))
                if args.json:  # after every table: a later failure loses nothing
                    args.json.write_text(json.dumps(results, indent=2))
    results = _merged([*results, *(r for f in args.merge for r in json.loads(f.read_text()))])
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    if args.tracking_uri:
        print(f"MLflow run {log_to_mlflow(results, args.plot, args.tracking_uri)} (experiment fedcrm-benchmarks)")


def _merged(results: list[dict]) -> list[dict]:
    """One entry per (use case, split): the rows of every run of it together (the first run's ceiling)."""
    merged: dict[tuple[str, str], dict] = {}
    for result in results:
        key = (result["use_case"], result["split"])
        if key not in merged:
            merged[key] = {**result, "rows": dict(result["rows"]), "seconds": dict(result["seconds"])}
        else:
            merged[key]["rows"].update({k: v for k, v in result["rows"].items() if not k.startswith("ceiling")})
            merged[key]["seconds"].update(result["seconds"])
    return list(merged.values())


if __name__ == "__main__":
    main()
