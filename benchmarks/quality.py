"""Quality benchmark: federated DP vs the centralized ceiling, local-only and non-private FedAvg.

    .venv/bin/python benchmarks/quality.py [--use-case lead-scoring churn] [--seeds 0 1 2] [--epsilons 1 3 8]

For each bundled use case: three non-IID regions (seeded Dirichlet label skew, α = 1, seed 42),
the contract's features, the default model (MLP [32]) and schedule (10 rounds × 1 local epoch).
All methods are scored on the same regional holdouts (example-weighted global AUC).

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
import statistics
import time
import warnings

import numpy as np
import pandas as pd

from connectors import load_bundled
from fedcrm.aggregation import PlainSumAggregator, pack_update, unpack_update_sum
from fedcrm.config import load_config
from fedcrm.evaluation import combine_metrics, evaluate_predictions
from fedcrm.features import FeaturePipeline
from fedcrm.model import build_model, get_vector
from fedcrm.records import TARGET
from fedcrm.regional import baseline_spec, feature_statistics, local_evaluation, local_round, prepare_region, privacy_plan
from fedcrm.split import partition
from fedcrm.strategies import make_strategy
from fedcrm.validation import build_suite_dict


def _setup(use_case: str, overrides: list[str]):
    config = load_config(use_case=use_case, overrides=["tracking.enabled=false", *overrides])
    contract = config.load_contract()
    parts = partition(load_bundled(use_case), contract, seed=42)
    suite = build_suite_dict(contract)
    regions = {r: prepare_region(df, contract, config, region=r, suite=suite, source=r) for r, df in parts.items()}
    stats = {r: feature_statistics(p.train, contract, min_k=config.privacy.min_k) for r, p in regions.items()}
    pipeline = FeaturePipeline.fit(contract, PlainSumAggregator().sum(stats), clip_z=config.features.clip_z)
    return config, regions, pipeline


def _with(config, **privacy):
    return config.model_copy(update={"privacy": config.privacy.model_copy(update=privacy)})


def _scores(regions, pipeline, vectors, config) -> dict[str, float]:
    per_region = {r: local_evaluation(p.holdout, pipeline, vectors[r], config) for r, p in regions.items()}
    return {"global": combine_metrics(per_region).auc, **{r: m.auc for r, m in per_region.items()}}


def _start(config, pipeline, seed: int) -> np.ndarray:
    return get_vector(build_model(pipeline.n_features, config.training.hidden_sizes, seed=seed))


def federated(config, regions, pipeline, seed: int) -> dict[str, float]:
    strategy, aggregator = make_strategy(config.strategy), PlainSumAggregator()
    plans = {r: privacy_plan(len(p.train), config, region=r) for r, p in regions.items()}
    vector = _start(config, pipeline, seed)
    for number in range(1, config.training.rounds + 1):
        updates = {r: local_round(p.train, pipeline, vector, config, seed=seed * 100_003 + number, plan=plans[r])
                   for r, p in regions.items()}
        total = aggregator.sum({r: pack_update(u.vector - vector, u.n_examples, u.mean_loss) for r, u in updates.items()})
        vector = strategy.apply(vector, unpack_update_sum(total).mean_delta)
    return _scores(regions, pipeline, {r: vector for r in regions}, config)


def local_only(config, regions, pipeline, seed: int) -> dict[str, float]:
    alone, start = baseline_spec(config), _start(config, pipeline, seed)
    vectors = {r: local_round(p.train, pipeline, start, alone, seed=seed, plan=privacy_plan(len(p.train), alone, region=r)).vector
               for r, p in regions.items()}
    return _scores(regions, pipeline, vectors, config)


def ceiling(config, regions, pipeline, seed: int) -> dict[str, dict[str, float]]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    pooled = pd.concat([p.train for p in regions.values()], ignore_index=True)
    mlp = local_round(pooled, pipeline, _start(config, pipeline, seed), baseline_spec(config), seed=seed).vector
    results = {"mlp": _scores(regions, pipeline, {r: mlp for r in regions}, config)}
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
    start = _start(config, pipeline, 0)
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


def run(use_case: str, seeds: list[int], epsilons: list[float], overrides: list[str]) -> None:
    config, regions, pipeline = _setup(use_case, overrides)
    rows: dict[str, list[dict[str, float]]] = {}
    for seed in seeds:
        for name, result in ceiling(config, regions, pipeline, seed).items():
            rows.setdefault(f"ceiling: {name} (pooled, non-private)", []).append(result)
        plain = _with(config, mode="off")
        rows.setdefault("local-only, non-private", []).append(local_only(plain, regions, pipeline, seed))
        rows.setdefault("federated, non-private", []).append(federated(plain, regions, pipeline, seed))
        for eps in epsilons:
            private = _with(config, target_epsilon=eps)
            rows.setdefault(f"local-only, DP ε={eps:g}", []).append(local_only(private, regions, pipeline, seed))
            rows.setdefault(f"federated, DP ε={eps:g}", []).append(federated(private, regions, pipeline, seed))
    ceilings = {k: statistics.mean(r["global"] for r in v) for k, v in rows.items() if k.startswith("ceiling")}
    best = max(ceilings, key=ceilings.get)
    print(f"\n== {use_case}: {sum(len(p.train) for p in regions.values())} training records in {len(regions)} regions, "
          f"seeds {seeds}; ceiling = {best} ({ceilings[best]:.4f})")
    print(f"{'method':<40} {'global AUC (mean ± sd)':>24} {'÷ ceiling':>10}   per-region AUC")
    for name, results in rows.items():
        glob = [r["global"] for r in results]
        per = "  ".join(f"{r} {statistics.mean(x[r] for x in results):.3f}" for r in regions)
        print(f"{name:<40} {_fmt(glob):>24} {statistics.mean(glob) / ceilings[best]:>10.4f}   {per}")
    for eps in [None, *epsilons]:
        fed = rows["federated, non-private" if eps is None else f"federated, DP ε={eps:g}"]
        alone = rows["local-only, non-private" if eps is None else f"local-only, DP ε={eps:g}"]
        verdicts = []
        for r in regions:
            f, a = [x[r] for x in fed], [x[r] for x in alone]
            sd = statistics.stdev(f) if len(f) > 1 else 0.0
            verdicts.append(f"{r} {'yes' if statistics.mean(f) >= statistics.mean(a) - sd else 'NO'}")
        label = "non-private" if eps is None else f"DP ε={eps:g}"
        print(f"federated ≥ local-only in every region (within 1 sd), {label}: {', '.join(verdicts)}")
    times = step_times(config, regions, pipeline)
    print("step time (ms): " + ", ".join(f"{k} {v * 1000:.2f}" for k, v in times.items())
          + f"; ratio dp-sgd/sgd {times['dp-sgd'] / times['sgd']:.2f}, dp-sgd/opacus {times['dp-sgd'] / times['opacus-make_private']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--use-case", nargs="+", default=["lead-scoring", "churn"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for use_case in args.use_case:
        print(f"config overrides: {args.overrides or 'none (defaults)'}")
        run(use_case, args.seeds, args.epsilons, args.overrides)


if __name__ == "__main__":
    main()
