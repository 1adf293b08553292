"""Flower's SecAgg+ code timed per party, for comparison with ``benchmarks/secagg.py``.

    /tmp/flwr-venv/bin/python benchmarks/flower_secaggplus.py [--parties 3 10 100 1000]
        [--sizes 1000 100000 1000000] [--extra 1000x10000] [--repeats 3] [--dtype float64]

Runs in a virtualenv with Flower (``flwr``) installed and does not import fedcrm. No Flower
server, Ray, gRPC or SuperLink is started: the four client stages of Flower's SecAgg+ mod
(``flwr.client.mod.secure_aggregation.secaggplus_mod``) are called directly, once per client,
and this script does the routing that ``SecAggPlusWorkflow`` (the server side) would do over
the network, building each stage's ``ConfigRecord`` with the keys and value types the
workflow sends and the mod's ``check_configs`` demands. All clients run in this one process,
so times are wall-clock times on one machine with no network. For each number of clients n:

* neighbourhood: for n <= 100 the complete graph (``share_num = n``), otherwise a random ring in
  which each client has k/2 neighbours on each side, k = 2*ceil(1.5*log2(n)) and
  ``share_num = k + 1``; threshold = max(2, ceil(2/3 * share_num)). The neighbour sets are
  built exactly as ``SecAggPlusWorkflow.setup_stage`` builds them (a shuffled ring of
  ``share_num >> 1`` offsets each side, each client counting as its own neighbour).
* setup: ``_setup`` (two SECP384R1 key pairs) plus ``_share_keys`` (Shamir shares of the mask
  seed and of the PEM-encoded first private key, one ECDH + Fernet encryption per neighbour),
  per client, median over clients. Setup does not depend on the vector size, so it runs once
  per n and is reused for every d (in a real Flower round all four stages run every round).

Then for each vector size d, ``repeats`` rounds on those keys (one where n*d >= 1e8):

* masking: ``_collect_masked_vectors`` per client (decrypting the forwarded shares, stochastic
  quantisation, the private mask and one pairwise mask per neighbour), median over clients
  and rounds. The input is a random vector of d values in [-10, 10] passed as Flower
  ``Parameters`` (``ndarrays_to_parameters``) with ``num_examples == max_weight``, so Flower's
  weighting factor is 1 and the aggregate is the plain mean.
* unmask: ``_unmask`` per client with no dropouts, median over clients and rounds.
* server: the server's share of ``collect_masked_vectors_stage`` (decoding and summing the
  masked vectors) plus ``unmask_stage`` up to the dequantised aggregate, replicated line for
  line with Flower's own helpers (``bytes_to_ndarray``, ``parameters_*``, ``combine_shares``,
  ``pseudo_rand_gen``, ``factor_extract``, ``dequantize``), timed on the first round only (it
  is dominated by Shamir reconstruction, which does not change between rounds). With no
  dropouts the workflow's branch for dropped clients (rebuilding their pairwise masks from a
  reconstructed private key) never runs, so it is not reproduced. The aggregate is checked
  against the exact sum (``max err`` is the error of mean * n, the secure *sum*).
* bytes: each reply's ``ConfigRecord`` as Flower serialises it (``config_record_to_proto``);
  the Message envelope and gRPC framing around it are not counted.

Where n*share_num*d > 4e9 only three clients' masking is timed (no full sum, no unmask) and
the row says so, like ``benchmarks/secagg.py``.

Flower's mask generator folds the 32-byte seed (the mask seed or an ECDH-derived key) to 32
bits and expands it with numpy's MT19937 — ``secaggplus_utils.pseudo_rand_gen``::

    seed32 = 0
    for i in range(0, len(seed), 4):
        seed32 ^= int.from_bytes(seed[i : i + 4], "little")
    gen = np.random.RandomState(seed32)
    ... gen.randint(0, num_range - 1, dimension, dtype=np.int64)

so every mask is one of 2**32 Mersenne-Twister streams: fast, but not a cryptographic PRG, and
a mask can be recovered by trying every 32-bit seed. Keep that in mind when comparing masking
times with fedcrm's ChaCha20 keystream. Flower also signs nothing in these stages, and its
quantisation (2**22 levels over the clipping range, 32-bit modulus) differs from fedcrm's.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord
from flwr.client.mod.secure_aggregation.secaggplus_mod import (
    SecAggPlusState,
    _collect_masked_vectors,
    _setup,
    _share_keys,
    _unmask,
    check_configs,
)
from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.common.serde import config_record_to_proto

FULL_SUM_BUDGET_WORDS = 4e9  # n·share_num·d mask words a full simulated sum may expand
COMPLETE_GRAPH_MAX_CLIENTS = 100
CLIPPING_RANGE = 10.0  # the vectors are uniform in [-10, 10], as in benchmarks/secagg.py
QUANTIZATION_RANGE = 2**22  # SecAggPlusWorkflow's defaults
MODULUS_RANGE = 2**32
MAX_WEIGHT = 1000.0
NUM_EXAMPLES = 1000  # == MAX_WEIGHT: Flower's weighting factor is exactly 1


def neighbourhood(n: int) -> tuple[int, int]:
    """(share_num, threshold) for n clients, matching fedcrm's defaults."""
    if n <= COMPLETE_GRAPH_MAX_CLIENTS:
        share_num = n
    else:
        share_num = min(n, 2 * math.ceil(1.5 * math.log2(n)) + 1)
    return share_num, max(2, math.ceil(2 / 3 * share_num))


def ring_neighbours(nids: list[int], share_num: int, rng: random.Random) -> dict[int, set[int]]:
    """Neighbour sets as ``SecAggPlusWorkflow.setup_stage`` builds them (each includes the client)."""
    order = list(nids)
    rng.shuffle(order)
    half_share = share_num >> 1
    return {nid: {order[(idx + offset) % len(order)] for offset in range(-half_share, half_share + 1)}
            for idx, nid in enumerate(order)}


def record_bytes(values: dict) -> int:
    """Size of a reply's ConfigRecord as Flower serialises it."""
    return config_record_to_proto(ConfigRecord(values)).ByteSize()


def _checked(stage: str, values: dict) -> ConfigRecord:
    """The ConfigRecord the mod hands a stage (``Key.STAGE`` already popped), validated like the mod does."""
    configs = ConfigRecord(values)
    check_configs(stage, configs)
    return configs


def _median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values) if values else float("nan")


@dataclass
class Federation:
    """n client states after setup, plus what the server holds between stages."""

    share_num: int
    threshold: int
    neighbours: dict[int, set[int]]
    states: dict[int, SecAggPlusState] = field(default_factory=dict)
    public_keys: dict[int, list[bytes]] = field(default_factory=dict)
    forward_srcs: dict[int, list[int]] = field(default_factory=dict)
    forward_ciphertexts: dict[int, list[bytes]] = field(default_factory=dict)
    setup_s: dict[int, float] = field(default_factory=dict)
    setup_bytes: dict[int, int] = field(default_factory=dict)

    @classmethod
    def setup(cls, n: int, rng: random.Random) -> Federation:
        """Stages 0 and 1 for every client, routing keys and shares like the server workflow."""
        share_num, threshold = neighbourhood(n)
        nids = rng.sample(range(1, 2**63), n)
        fed = cls(share_num, threshold, ring_neighbours(nids, share_num, rng))
        setup_configs = {
            Key.SAMPLE_NUMBER: n, Key.SHARE_NUMBER: share_num, Key.THRESHOLD: threshold,
            Key.CLIPPING_RANGE: CLIPPING_RANGE, Key.TARGET_RANGE: QUANTIZATION_RANGE,
            Key.MOD_RANGE: MODULUS_RANGE, Key.MAX_WEIGHT: MAX_WEIGHT,
        }
        for nid in nids:
            state = SecAggPlusState()
            state.nid = nid  # the mod takes it from msg.metadata.dst_node_id
            configs = _checked(Stage.SETUP, setup_configs)
            began = time.perf_counter()
            reply = _setup(state, configs)
            fed.setup_s[nid] = time.perf_counter() - began
            fed.setup_bytes[nid] = record_bytes(reply)
            fed.states[nid] = state
            fed.public_keys[nid] = [reply[Key.PUBLIC_KEY_1], reply[Key.PUBLIC_KEY_2]]

        fed.forward_srcs = {nid: [] for nid in nids}
        fed.forward_ciphertexts = {nid: [] for nid in nids}
        for nid in nids:
            configs = _checked(Stage.SHARE_KEYS, {str(m): fed.public_keys[m] for m in fed.neighbours[nid]})
            began = time.perf_counter()
            reply = _share_keys(fed.states[nid], configs)
            fed.setup_s[nid] += time.perf_counter() - began
            fed.setup_bytes[nid] += record_bytes(reply)
            for dst, ciphertext in zip(reply[Key.DESTINATION_LIST], reply[Key.CIPHERTEXT_LIST], strict=True):
                fed.forward_srcs[dst].append(nid)
                fed.forward_ciphertexts[dst].append(ciphertext)
        return fed

    def mask(self, nid: int, vector: np.ndarray) -> tuple[dict, float]:
        """Stage 2 for one client: its reply and the time the stage took."""
        configs = _checked(Stage.COLLECT_MASKED_VECTORS, {
            Key.CIPHERTEXT_LIST: self.forward_ciphertexts[nid], Key.SOURCE_LIST: self.forward_srcs[nid]})
        parameters = ndarrays_to_parameters([vector])
        began = time.perf_counter()
        reply = _collect_masked_vectors(self.states[nid], configs, NUM_EXAMPLES, parameters)
        return reply, time.perf_counter() - began

    def unmask(self, nid: int, active: set[int]) -> tuple[dict, float]:
        """Stage 3 for one client, nobody having dropped out."""
        configs = _checked(Stage.UNMASK, {
            Key.ACTIVE_NODE_ID_LIST: list(self.neighbours[nid] & active), Key.DEAD_NODE_ID_LIST: []})
        began = time.perf_counter()
        reply = _unmask(self.states[nid], configs)
        return reply, time.perf_counter() - began

    def reconstruct(self, masked_replies: list[dict], unmask_replies: list[dict]) -> np.ndarray:
        """The server's work after stage 2 and after stage 3, as in SecAggPlusWorkflow (no dropouts)."""
        masked_vector = None
        for reply in masked_replies:  # collect_masked_vectors_stage
            client_masked_vec = [bytes_to_ndarray(b) for b in reply[Key.MASKED_PARAMETERS]]
            if masked_vector is None:
                masked_vector = client_masked_vec
            else:
                masked_vector = parameters_addition(masked_vector, client_masked_vec)
        masked_vector = parameters_mod(masked_vector, MODULUS_RANGE)

        collected_shares_dict: dict[int, list[bytes]] = {nid: [] for nid in self.states}  # unmask_stage
        for reply in unmask_replies:
            for owner_nid, share in zip(reply[Key.NODE_ID_LIST], reply[Key.SHARE_LIST], strict=True):
                collected_shares_dict[owner_nid].append(share)
        for share_list in collected_shares_dict.values():
            if len(share_list) < self.threshold:
                raise RuntimeError("Not enough shares to recover secret in unmask vectors stage")
            secret = combine_shares(share_list)
            private_mask = pseudo_rand_gen(secret, MODULUS_RANGE, get_parameters_shape(masked_vector))
            masked_vector = parameters_subtraction(masked_vector, private_mask)
        recon_parameters = parameters_mod(masked_vector, MODULUS_RANGE)
        q_total_ratio, recon_parameters = factor_extract(recon_parameters)
        inv_dq_total_ratio = QUANTIZATION_RANGE / q_total_ratio
        aggregated_vector = dequantize(recon_parameters, CLIPPING_RANGE, QUANTIZATION_RANGE)
        offset = -(len(masked_replies) - 1) * CLIPPING_RANGE
        for vec in aggregated_vector:
            vec += offset
            vec *= inv_dq_total_ratio
        return aggregated_vector[0]


def bench(fed: Federation, d: int, repeats: int, dtype: str, rng: np.random.Generator) -> dict[str, object]:
    n = len(fed.states)
    nids = list(fed.states)
    row: dict[str, object] = {
        "n": n, "d": d, "share_num": fed.share_num, "t": fed.threshold,
        "setup_ms_per_party": _median_ms(list(fed.setup_s.values())),
        "setup_bytes_per_party": statistics.median(fed.setup_bytes.values()),
    }
    if n * fed.share_num * d > FULL_SUM_BUDGET_WORDS:
        times, sizes = [], []
        for nid in nids[:3]:
            reply, seconds = fed.mask(nid, rng.uniform(-10, 10, d).astype(dtype))
            times.append(seconds)
            sizes.append(record_bytes(reply))
        row.update(mask_ms_per_party=_median_ms(times), masked_bytes_per_party=statistics.median(sizes),
                   note="per-party masking only: a full simulated sum exceeds this machine's time budget")
        return row

    mask_times, unmask_times, errors = [], [], []
    for repeat in range(repeats):
        exact = np.zeros(d)
        masked_replies = []
        for nid in nids:
            vector = rng.uniform(-10, 10, d).astype(dtype)
            exact += vector
            reply, seconds = fed.mask(nid, vector)
            masked_replies.append(reply)
            mask_times.append(seconds)
        active = set(nids)
        unmask_replies = []
        for nid in nids:
            reply, seconds = fed.unmask(nid, active)
            unmask_replies.append(reply)
            unmask_times.append(seconds)
        if repeat == 0:
            row["masked_bytes_per_party"] = statistics.median(record_bytes(r) for r in masked_replies[:3])
            row["unmask_bytes_per_party"] = statistics.median(record_bytes(r) for r in unmask_replies[:3])
            began = time.perf_counter()
            mean = fed.reconstruct(masked_replies, unmask_replies)
            row["server_ms"] = 1000 * (time.perf_counter() - began)
            errors.append(float(np.max(np.abs(mean * n - exact))))
        del masked_replies, unmask_replies
    row.update(mask_ms_per_party=_median_ms(mask_times), unmask_ms_per_party=_median_ms(unmask_times),
               max_error=max(errors))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parties", type=int, nargs="+", default=[3, 10, 100, 1000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--extra", nargs="*", default=["1000x10000"], help="extra NxD cells (the 1,000-party target)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    setup_rng = random.Random(0)
    cells = [(n, d) for n in args.parties for d in args.sizes]
    cells += [cell for cell in (tuple(int(x) for x in extra.split("x")) for extra in args.extra) if cell not in cells]
    print(f"{'n':>5} {'d':>9} {'share_num':>9} {'t':>4} {'setup ms/p':>10} {'mask ms/p':>10} {'unmask ms/p':>11} "
          f"{'server ms':>10} {'setup B/p':>10} {'masked B/p':>12} {'× plain':>8} {'unmask B/p':>10} {'max err':>9}")
    federations: dict[int, Federation] = {}
    for n, d in sorted(cells):
        if n not in federations:
            federations.clear()  # one n at a time: the states of the previous n are no longer needed
            federations[n] = Federation.setup(n, setup_rng)
        row = bench(federations[n], d, 1 if n * d >= 10**8 else args.repeats, args.dtype, rng)
        print(f"{n:>5} {d:>9} {row['share_num']:>9} {row['t']:>4} {row['setup_ms_per_party']:>10.2f} "
              f"{row['mask_ms_per_party']:>10.2f} {row.get('unmask_ms_per_party', float('nan')):>11.3f} "
              f"{row.get('server_ms', float('nan')):>10.1f} {row['setup_bytes_per_party']:>10,.0f} "
              f"{row['masked_bytes_per_party']:>12,.0f} {row['masked_bytes_per_party'] / (8 * d):>8.3f} "
              f"{row.get('unmask_bytes_per_party', float('nan')):>10,.0f} {row.get('max_error', float('nan')):>9.1e}"
              + (f"   ({row['note']})" if "note" in row else ""), flush=True)


if __name__ == "__main__":
    main()
