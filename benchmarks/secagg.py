"""Secure-aggregation benchmark: time and bytes per party, and the share of a federated round.

    .venv/bin/python benchmarks/secagg.py [--parties 3 10 100 1000] [--sizes 1000 100000 1000000] [--repeats 3]

Every party runs in this one process (``fedcrm.secagg.local.LocalFederation``), so times are CPU
time on one core of this machine with no network. For each (n, d):

* setup: advertise + share-keys, per party (median over parties);
* masking: one party's masked-input step (median over a sample of parties);
* unmasking: the survivors' unmask replies (per party) and the coordinator's reconstruction;
* bytes a party sends (advertise, key shares, masked input, unmask reply) and receives.

A full secure sum needs all n masked inputs; where n·k·d is too large to generate in a few
minutes here, only the per-party masking cost is measured and the row says so. The reference
beside each secure sum is the plain sum of the same vectors (what a trusted coordinator does).

Then the round share at 3 regions on the bundled churn data, two ways:

* compute only: one real DP-SGD round per region (default model and schedule) against the
  secure sum of their packed updates, in this process;
* the real job (``--flow-rounds N``, default 10): ``fedcrm run`` through Prefect with secure
  aggregation on and then off (baselines and MLflow off), reading each round's
  ``duration_s`` and ``aggregation_s`` from the job summary (round 1 is dropped as warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fedcrm.secagg.envelope import Envelope
from fedcrm.secagg.local import LocalFederation

FULL_SUM_BUDGET_WORDS = 4e9  # n·(k+1)·d keystream words a full simulated sum may expand


def _median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def bench(n: int, d: int, repeats: int, rng: np.random.Generator) -> dict[str, object]:
    parties = [f"p{i:04d}" for i in range(n)]
    fed = LocalFederation(parties)
    began = time.perf_counter()
    assert fed.setup() == {}
    setup_s = time.perf_counter() - began
    graph = fed.aggregator.server.graph
    k = graph.degree
    bounds = np.full(d, 10.0)
    vectors = {p: rng.uniform(-10, 10, d) for p in parties}
    row: dict[str, object] = {"n": n, "d": d, "graph": "complete" if graph.complete else f"SecAgg+ k={k}",
                              "t": graph.threshold, "setup_ms_per_party": 1000 * setup_s / n}
    setup_bytes = [len(m) for m in fed.transcript if Envelope.from_bytes(m).phase in ("advertise", "share-keys")]
    row["setup_bytes_sent_per_party"] = sum(setup_bytes) / n

    full = n * (k + 1) * d <= FULL_SUM_BUDGET_WORDS
    if not full:
        sample = parties[: min(3, n)]
        requests = fed.aggregator.open_round(1, parties, bounds)
        times, sizes = [], []
        for p in sample:
            began = time.perf_counter()
            message = fed.contributors[p].contribute(requests[p], 1, vectors[p], bounds)
            times.append(time.perf_counter() - began)
            sizes.append(len(message))
        fed.aggregator.server.abort_round()
        row.update(mask_ms_per_party=_median_ms(times), masked_bytes_per_party=statistics.median(sizes),
                   note="per-party masking only: a full simulated sum exceeds this machine's time budget")
        return row

    mask_times, unmask_times, server_times, plain_times, errors, sizes, unmask_sizes = [], [], [], [], [], [], []
    for repeat in range(repeats):
        number = repeat + 1
        requests = fed.aggregator.open_round(number, parties, bounds)
        masked = {}
        for p in parties:
            began = time.perf_counter()
            masked[p] = fed.contributors[p].contribute(requests[p], number, vectors[p], bounds)
            mask_times.append(time.perf_counter() - began)
        sizes.append(statistics.median(len(m) for m in masked.values()))
        began = time.perf_counter()
        unmask = fed.aggregator.receive(masked)
        collect_s = time.perf_counter() - began
        replies = {}
        for p, request in unmask.items():
            began = time.perf_counter()
            replies[p] = fed.contributors[p].respond(request)
            unmask_times.append(time.perf_counter() - began)
        unmask_sizes.append(statistics.median(len(m) for m in replies.values()))
        began = time.perf_counter()
        result = fed.aggregator.finish(replies)
        server_times.append(collect_s + time.perf_counter() - began)
        began = time.perf_counter()
        exact = np.sum(np.stack(list(vectors.values())), axis=0)
        plain_times.append(time.perf_counter() - began)
        errors.append(float(np.max(np.abs(result.total - exact))))
    row.update(
        mask_ms_per_party=_median_ms(mask_times), unmask_ms_per_party=_median_ms(unmask_times),
        coordinator_ms=_median_ms(server_times), plain_sum_ms=_median_ms(plain_times),
        round_s=(n * statistics.median(mask_times) + n * statistics.median(unmask_times) + statistics.median(server_times)),
        masked_bytes_per_party=statistics.median(sizes), unmask_reply_bytes_per_party=statistics.median(unmask_sizes),
        plain_bytes_per_party=8 * d, max_error=max(errors), error_bound=float(result.error_bound.max()),
    )
    return row


def round_share(repeats: int) -> dict[str, float]:
    """At 3 regions on the bundled churn data: one DP-SGD round per region vs the secure sum of the updates."""
    from connectors import load_bundled
    from fedcrm.aggregation import pack_update, update_bounds
    from fedcrm.aggregation import PlainSumAggregator
    from fedcrm.config import load_config
    from fedcrm.features import FeaturePipeline
    from fedcrm.model import build_model, get_vector
    from fedcrm.regional import feature_statistics, local_round, prepare_region, privacy_plan
    from fedcrm.split import partition
    from fedcrm.validation import build_suite_dict

    config = load_config(use_case="churn", overrides=["tracking.enabled=false"])
    contract = config.load_contract()
    suite = build_suite_dict(contract)
    regions = {r: prepare_region(df, contract, config, region=r, suite=suite, source=r)
               for r, df in partition(load_bundled("churn"), contract, seed=42).items()}
    stats = {r: feature_statistics(p.train, contract, min_k=config.privacy.min_k) for r, p in regions.items()}
    pipeline = FeaturePipeline.fit(contract, PlainSumAggregator().sum(stats), clip_z=config.features.clip_z)
    start = get_vector(build_model(pipeline.n_features, config.training.hidden_sizes, seed=0))
    plans = {r: privacy_plan(len(p.train), config, region=r) for r, p in regions.items()}
    bounds = update_bounds(start.size, config.secure_aggregation.max_weight, config.strategy.max_update_norm)
    fed = LocalFederation(sorted(regions))
    began = time.perf_counter()
    fed.setup()
    setup_s = time.perf_counter() - began
    training, secure = [], []
    for number in range(1, repeats + 1):
        began = time.perf_counter()
        updates = {r: local_round(p.train, pipeline, start, config, seed=number, plan=plans[r]) for r, p in regions.items()}
        training.append(time.perf_counter() - began)
        packed = {r: pack_update(u.vector - start, u.n_examples, u.mean_loss) for r, u in updates.items()}
        began = time.perf_counter()
        fed.sum(number, packed, bounds)
        secure.append(time.perf_counter() - began)
    train_s, secure_s = statistics.median(training), statistics.median(secure)
    return {"parameters": start.size, "training_s": train_s, "secure_sum_s": secure_s, "setup_s": setup_s,
            "share": secure_s / (train_s + secure_s), "rounds": config.training.rounds,
            "share_with_setup_amortised": (secure_s + setup_s / config.training.rounds) / (train_s + secure_s + setup_s / config.training.rounds)}


def flow_share(rounds: int) -> dict[str, float]:
    """Median round time and aggregation time of real embedded jobs, secure vs plain."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as work:
        cli = [sys.executable, "-m", "cli.main"]
        state = str(Path(work) / "state")
        subprocess.run([*cli, "data", "split", "--use-case", "churn", "--state-dir", state], check=True, capture_output=True)
        for mode, enabled in (("secure", "true"), ("plain", "false")):
            summary_path = Path(work) / f"{mode}.json"
            subprocess.run([*cli, "run", "--use-case", "churn", "--state-dir", state, "--rounds", str(rounds),
                            "--set", "baselines.local_only=false", "--set", "baselines.central_reference=false",
                            "--set", "tracking.enabled=false", "--set", f"secure_aggregation.enabled={enabled}",
                            "--json-summary", str(summary_path)], check=True, capture_output=True)
            rows = json.loads(summary_path.read_text())["rounds"][1:]
            out[f"{mode}_round_s"] = statistics.median(r["duration_s"] for r in rows)
            out[f"{mode}_aggregation_s"] = statistics.median(r["aggregation_s"] for r in rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parties", type=int, nargs="+", default=[3, 10, 100, 1000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--extra", nargs="*", default=["1000x10000"], help="extra NxD cells (the 1,000-party target)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-round-share", action="store_true")
    parser.add_argument("--flow-rounds", type=int, default=10, help="rounds of the real embedded jobs (0 = skip)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cells = [(n, d) for n in args.parties for d in args.sizes]
    cells += [tuple(int(x) for x in cell.split("x")) for cell in args.extra if tuple(int(x) for x in cell.split("x")) not in cells]
    header = (f"{'n':>5} {'d':>9} {'graph':>15} {'t':>4} {'setup ms/p':>10} {'mask ms/p':>10} {'unmask ms/p':>11} "
              f"{'coord ms':>9} {'plain ms':>8} {'round s':>8} {'setup B/p':>10} {'masked B/p':>11} {'× plain':>8} "
              f"{'unmask B/p':>10} {'max err':>9}")
    print(header)
    for n, d in sorted(cells):
        row = bench(n, d, 1 if n * d >= 10**8 else args.repeats, rng)
        ratio = row["masked_bytes_per_party"] / (8 * d)
        print(f"{n:>5} {d:>9} {row['graph']:>15} {row['t']:>4} {row['setup_ms_per_party']:>10.2f} {row['mask_ms_per_party']:>10.2f} "
              f"{row.get('unmask_ms_per_party', float('nan')):>11.2f} {row.get('coordinator_ms', float('nan')):>9.1f} "
              f"{row.get('plain_sum_ms', float('nan')):>8.2f} {row.get('round_s', float('nan')):>8.2f} "
              f"{row['setup_bytes_sent_per_party']:>10,.0f} {row['masked_bytes_per_party']:>11,.0f} {ratio:>8.3f} "
              f"{row.get('unmask_reply_bytes_per_party', float('nan')):>10,.0f} {row.get('max_error', float('nan')):>9.1e}"
              + (f"   ({row['note']})" if "note" in row else ""), flush=True)
    if not args.skip_round_share:
        share = round_share(args.repeats)
        print(f"\nround share at 3 regions (churn, {share['parameters']} parameters, DP-SGD): training {share['training_s']:.3f} s, "
              f"secure sum {share['secure_sum_s'] * 1000:.1f} ms → {100 * share['share']:.2f} % of the round; "
              f"key setup {share['setup_s'] * 1000:.1f} ms once per job ({100 * share['share_with_setup_amortised']:.2f} % "
              f"amortised over {share['rounds']} rounds)")
    if not args.skip_round_share and args.flow_rounds > 1:
        real = flow_share(args.flow_rounds)
        print(f"real job through Prefect (churn, 3 regions, DP-SGD, median of rounds 2..{args.flow_rounds}): "
              f"secure round {real['secure_round_s']:.3f} s of which aggregation {real['secure_aggregation_s'] * 1000:.0f} ms "
              f"({100 * real['secure_aggregation_s'] / real['secure_round_s']:.1f} %); plain round {real['plain_round_s']:.3f} s "
              f"(aggregation {real['plain_aggregation_s'] * 1000:.0f} ms); secure ÷ plain round time "
              f"{real['secure_round_s'] / real['plain_round_s']:.3f}")


if __name__ == "__main__":
    main()
