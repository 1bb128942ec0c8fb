"""Placement benchmark: evenness per policy and the cost of ranking a large cluster.

    python -m simulations.bench_placement [--nodes 50] [--jobs 100000] [--rank-nodes 10000]
                                          [--shard-jobs 10000] [--shards 3] [--seed 1]

Prints, per policy, max/mean and min/mean jobs per node over random jobs, and the median
time to rank (full order) and to pick the top 3 of 10,000 nodes for one job. The baseline
is the bare cost of 10,000 blake3 calls on 53-byte inputs measured in the same run: the
floor any hashed ranking must pay in Python, so the ratio says how much placement adds.
Then sharded jobs through the scheduler's own code (shard_specs, order_nodes): where each
shard's first choice lands over the same nodes, all capable and with only 2 capable: shards per
node max/mean and the share of jobs whose shards start on distinct nodes (goal 100 % when there
are at least as many capable nodes as shards).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from dataclasses import replace

from blake3 import blake3

from pack_manager.jobspec import JobSpec
from pack_manager.placement import POLICIES, rank, top_k
from pack_manager.requirements import WorkloadRequirements
from pack_manager.scheduling import JobView, NodeView, order_nodes
from pack_manager.shards import shard_specs
from simulations.sim.world import CAPABILITIES


def median_seconds(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def evenness(rng: random.Random, nodes: int, jobs: int) -> dict[str, tuple[float, float]]:
    node_ids = [rng.randbytes(32) for _ in range(nodes)]
    job_ids = [rng.randbytes(32) for _ in range(jobs)]
    figures = {}
    for policy in POLICIES:
        wins = Counter(top_k(job, node_ids, 1, policy)[0] for job in job_ids)
        counts = [wins[n] for n in node_ids]
        mean = jobs / nodes
        figures[policy] = (max(counts) / mean, min(counts) / mean)
    return figures


def chance_max_over_mean(rng: random.Random, nodes: int, jobs: int, trials: int = 5) -> float:
    """What a perfectly uniform random assignment gives at this size, for comparison."""
    ratios = []
    for _ in range(trials):
        counts = Counter(rng.randrange(nodes) for _ in range(jobs))
        ratios.append(max(counts.values()) / (jobs / nodes))
    return statistics.median(ratios)


def sharded(
    rng: random.Random, nodes: int, jobs: int, shards: int, capable: int
) -> tuple[float, float, float]:
    """(shards per capable node max/mean, min/mean, share of jobs on distinct nodes) for the
    first choice of every shard; nodes past `capable` lack the wasm executor."""
    ids = [rng.randbytes(32) for _ in range(nodes)]
    able, unable = (
        NodeView(CAPABILITIES, None, "alive"),
        NodeView(replace(CAPABILITIES, executors=()), None, "alive"),
    )
    views = {node_id: able if i < capable else unable for i, node_id in enumerate(ids)}
    requirements = WorkloadRequirements(executor="wasm")
    counts: Counter = Counter()
    distinct = 0
    for _ in range(jobs):
        spec = JobSpec(
            kind="wasm",
            submitter=ids[0],
            nonce=rng.randbytes(16),
            module="m.wasm",
            context="ab" * 32,
            requirements=requirements,
        )
        firsts = [order_nodes(JobView(s.job_id(), s, {}), views)[0] for s in shard_specs(spec, shards, False)]
        counts.update(firsts)
        distinct += len(set(firsts)) == shards
    per_node = [counts[n] for n in ids[:capable]]
    mean = jobs * shards / capable
    return max(per_node) / mean, min(per_node) / mean, distinct / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rank-nodes", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--shard-jobs", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    print(f"evenness: {args.nodes} nodes x {args.jobs:,} random jobs (goal hashed-xor max/mean <= 1.08)")
    print(f"  uniform chance   max/mean {chance_max_over_mean(rng, args.nodes, args.jobs):.3f}")
    for policy, (high, low) in evenness(rng, args.nodes, args.jobs).items():
        print(f"  {policy:<16} max/mean {high:.3f}  min/mean {low:.3f}")

    node_ids = [rng.randbytes(32) for _ in range(args.rank_nodes)]
    job = rng.randbytes(32)
    inputs = [b"formnet placement v1\x00" + n for n in node_ids]
    baseline = median_seconds(lambda: [blake3(x).digest() for x in inputs], args.repeats)
    print(f"ranking {args.rank_nodes:,} nodes for one job, median of {args.repeats} (goal <= 10 ms)")
    print(f"  baseline: {args.rank_nodes:,} bare blake3 calls  {baseline * 1000:7.2f} ms")
    for policy in POLICIES:
        full = median_seconds(lambda: rank(job, node_ids, policy), args.repeats)
        first3 = median_seconds(lambda: top_k(job, node_ids, 3, policy), args.repeats)
        print(
            f"  {policy:<16} rank {full * 1000:7.2f} ms ({full / baseline:.2f}x baseline)"
            f"   top-3 {first3 * 1000:7.2f} ms ({first3 / baseline:.2f}x)"
        )

    print(f"sharded: {args.nodes} nodes x {args.shard_jobs:,} jobs x {args.shards} shards (hashed-xor)")
    chance = chance_max_over_mean(rng, args.nodes, args.shard_jobs * args.shards)
    print(f"  uniform chance   max/mean {chance:.3f} for {args.shard_jobs * args.shards:,} placements")
    for capable in (args.nodes, 2):
        high, low, share = sharded(rng, args.nodes, args.shard_jobs, args.shards, capable)
        print(
            f"  {capable:>3} capable  shards per capable node max/mean {high:.3f}  min/mean {low:.3f}"
            f"  jobs with shards on distinct nodes {share * 100:.1f} %"
        )


if __name__ == "__main__":
    main()
