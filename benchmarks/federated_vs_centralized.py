"""Federated FedAvg vs the centralized ceiling and local-only models, on the bundled data.

    .venv/bin/python benchmarks/federated_vs_centralized.py [--use-case churn] [--rounds 10] [--seeds 0 1 2]

Same regions (seeded Dirichlet split), same contract, same feature pipeline, same model and
the same number of passes over each record for every method. The reference runs beside the
federated one:

* centralized: one model on the pooled training rows. It is the accuracy ceiling, and in
  production it is exactly what the law forbids.
* local-only: each region trains alone on its own rows.

All are scored on the same regional holdouts (example-weighted global AUC). The script prints
medians over the seeds and the ratios federated/centralized and federated/local-only.
Orchestration is left out (no Prefect), so the timings compare the maths only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from connectors import load_bundled
from fedcrm.aggregation import PlainSumAggregator, weighted_mean
from fedcrm.config import load_config
from fedcrm.evaluation import combine_metrics
from fedcrm.features import FeaturePipeline
from fedcrm.model import build_model, get_vector
from fedcrm.regional import feature_statistics, local_evaluation, local_round, prepare_region
from fedcrm.split import partition
from fedcrm.validation import build_suite_dict


def _with(config, **training):
    return config.model_copy(update={"training": config.training.model_copy(update=training)})


def run(use_case: str, rounds: int, seeds: list[int]) -> dict[str, list[tuple[float, float]]]:
    config = load_config(use_case=use_case, overrides=[f"training.rounds={rounds}"])
    contract = config.load_contract()
    parts = partition(load_bundled(use_case), contract, seed=42)
    suite = build_suite_dict(contract)
    prepared = {r: prepare_region(df, contract, config, region=r, suite=suite, source=r) for r, df in parts.items()}
    aggregator = PlainSumAggregator()
    stats = {r: feature_statistics(p.train, contract, min_k=config.privacy.min_k) for r, p in prepared.items()}
    pipeline = FeaturePipeline.fit(contract, aggregator.sum(stats), clip_z=config.features.clip_z)
    results: dict[str, list[tuple[float, float]]] = {"federated": [], "centralized": [], "local-only": []}

    def score(vectors: dict[str, np.ndarray], cfg) -> float:
        return combine_metrics({r: local_evaluation(p.holdout, pipeline, vectors[r], cfg) for r, p in prepared.items()}).auc

    for seed in seeds:
        cfg = _with(config, seed=seed)
        start_vector = get_vector(build_model(pipeline.n_features, cfg.training.hidden_sizes, seed=seed))

        began = time.perf_counter()
        vector = start_vector
        for number in range(1, rounds + 1):
            updates = {r: local_round(p.train, pipeline, vector, cfg, seed=seed * 100_003 + number) for r, p in prepared.items()}
            vector = weighted_mean(aggregator, {r: u.vector for r, u in updates.items()}, {r: u.n_examples for r, u in updates.items()})
        results["federated"].append((score({r: vector for r in prepared}, cfg), time.perf_counter() - began))

        long_cfg = _with(config, seed=seed, local_epochs=rounds * cfg.training.local_epochs)
        began = time.perf_counter()
        pooled = pd.concat([p.train for p in prepared.values()], ignore_index=True)
        central = local_round(pooled, pipeline, start_vector, long_cfg, seed=seed).vector
        results["centralized"].append((score({r: central for r in prepared}, cfg), time.perf_counter() - began))

        began = time.perf_counter()
        local = {r: local_round(p.train, pipeline, start_vector, long_cfg, seed=seed).vector for r, p in prepared.items()}
        results["local-only"].append((score(local, cfg), time.perf_counter() - began))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--use-case", default="lead-scoring")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results = run(args.use_case, args.rounds, args.seeds)
    med = {k: (statistics.median(a for a, _ in v), statistics.median(t for _, t in v)) for k, v in results.items()}
    print(f"use case {args.use_case}, {args.rounds} rounds, seeds {args.seeds} (medians)")
    print(f"{'method':<12} {'global AUC':>10} {'train s':>8}")
    for name, (auc, seconds) in med.items():
        print(f"{name:<12} {auc:>10.4f} {seconds:>8.2f}")
    print(f"ratio federated/centralized AUC: {med['federated'][0] / med['centralized'][0]:.4f}")
    print(f"ratio federated/local-only  AUC: {med['federated'][0] / med['local-only'][0]:.4f}")


if __name__ == "__main__":
    main()
