"""Per-round overhead of the exchange (one regional run per job, signed messages) beyond compute.

    .venv/bin/python benchmarks/exchange.py [--rounds 10] [--s3]
    .venv/bin/python benchmarks/exchange.py --sealing     # cost of encrypting bodies, per message

Runs the real embedded job (``fedcrm run``, churn, 3 regions, secure aggregation on; baselines
and MLflow off) and reads each round's ``duration_s`` and ``transport_s`` from the job summary.
``transport_s`` is the time the round's requests (training, unmask, evaluation) took beyond the
slowest region's own compute for each: encoding, signing, writing, polling, verifying and
decoding. Round 1 is dropped as warm-up. ``--s3`` puts the exchange in a bucket of an S3 API
server on loopback (moto's) instead of a local folder. ``--sealing`` times one message's seal and
open (sign + verify, with and without encrypting the body to its recipient) for a request that
carries the churn model (4,097 parameters) and one of 100,000, without running a job.

The reference beside it is the compute of the same round (duration − transport). The target of
issue 6 is a transport overhead of at most 1 s per round on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_job(rounds: int, extra: list[str], env: dict[str, str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as work:
        cli = [sys.executable, "-m", "cli.main"]
        subprocess.run([*cli, "data", "split", "--use-case", "churn", "--state-dir", f"{work}/s"], cwd=REPO, env=env,
                       check=True, capture_output=True)
        subprocess.run([*cli, "run", "--use-case", "churn", "--state-dir", f"{work}/s", "--rounds", str(rounds),
                        "--set", "baselines.local_only=false", "--set", "baselines.central_reference=false",
                        "--set", "tracking.enabled=false", *extra, "--json-summary", f"{work}/summary.json"],
                       cwd=REPO, env=env, check=True, capture_output=True)
        return json.loads(Path(f"{work}/summary.json").read_text())["rounds"]


def sealing_cost(repeats: int = 50) -> None:
    """Median milliseconds to seal and open one request, signed only vs signed and encrypted."""
    import time

    import numpy as np

    sys.path.insert(0, str(REPO))
    from fedcrm.features import FeaturePipeline
    from fedcrm.protocol import LocalEvaluation
    from fedcrm.secagg.envelope import Envelope, Inbox
    from fedcrm.secagg.identity import COORDINATOR, Identity, Keyring

    sender, recipient = Identity.generate(COORDINATOR), Identity.generate("eu")
    keyring = Keyring.of([sender, recipient])
    print("parameters  body      signed only   + encrypted   overhead")
    for size in (4_097, 100_000):
        request = LocalEvaluation(pipeline=FeaturePipeline(use_case="bench", numeric=[], categorical=[]),
                                  global_vector=np.random.default_rng(0).normal(size=size), round_number=1)
        body = request.model_dump(mode="json")
        timings = {}
        for encrypted in (False, True):
            samples = []
            for number in range(repeats):
                began = time.perf_counter()
                data = Envelope.seal(sender, job_id="bench", round=number, phase="request", recipient="eu", body=body,
                                     encrypt_to=keyring.encryption_key("eu") if encrypted else None).to_bytes()
                Inbox(keyring, "bench", "eu", decryption_key=recipient.encryption_key if encrypted else None).open(
                    data, round=number, phase="request")
                samples.append(time.perf_counter() - began)
            timings[encrypted] = (statistics.median(samples) * 1e3, len(data))
        (plain_ms, plain_bytes), (sealed_ms, sealed_bytes) = timings[False], timings[True]
        print(f"{size:>10,}  {plain_bytes / 1e3:6.0f} kB  {plain_ms:9.2f} ms  {sealed_ms:9.2f} ms  "
              f"{sealed_ms - plain_ms:+6.2f} ms, {sealed_bytes - plain_bytes:+d} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--s3", action="store_true")
    parser.add_argument("--sealing", action="store_true", help="time encrypting one message instead of running a job")
    args = parser.parse_args()
    if args.sealing:
        sealing_cost()
        return
    env, extra, server = dict(os.environ), [], None
    if args.s3:
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per poll otherwise

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="test", aws_secret_access_key="test",
                     region_name="us-east-1").create_bucket(Bucket="exchange")
        extra = ["--set", "exchange.url=s3://exchange/fedcrm", "--set", f"exchange.endpoint_url=http://127.0.0.1:{port}"]
    try:
        rounds = run_job(args.rounds, extra, env)[1:]
    finally:
        if server is not None:
            server.stop()
    duration = statistics.median(r["duration_s"] for r in rounds)
    transport = statistics.median(r["transport_s"] for r in rounds)
    where = "S3 API server on loopback" if args.s3 else "local folder"
    print(f"exchange: {where}; {len(rounds)} rounds after warm-up, medians")
    print(f"  round duration        {duration:7.3f} s")
    print(f"  of which transport    {transport:7.3f} s   (target ≤ 1 s: {'met' if transport <= 1 else 'NOT met'})")
    print(f"  compute (reference)   {duration - transport:7.3f} s")
    print(f"  transport ÷ compute   {transport / (duration - transport):7.3f}")


if __name__ == "__main__":
    main()
