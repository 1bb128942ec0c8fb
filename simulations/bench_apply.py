"""Cost of receiving one update vs the number of writers in the document (figures, not assertions).

    python -m simulations.bench_apply [--writers 10 2000] [--samples 2000]

A document holds one writer (pycrdt client id) per node start: 2000 at a 1000-node cluster
that restarted once. For each writer count W: W node keys each write their signed record
from a document of their own, a receiver takes all of them in; then heartbeats (each writer
rewrites its record, as formd's tick does) are applied to the receiver with
`ClusterDocument.apply_remote`, each update twice (epidemic push delivers copies), and one
out-of-order update per 20 (refused as missing, as a push overtaken by a later one is).
Prints the median and mean microseconds per call of each kind and the ratio of the largest
W to the smallest, measured in the same process, the sizes taking turns sample by sample (so
a change in machine load hits every size alike).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from crdt_state.document import ClusterDocument
from crdt_state.measure import Writer


def build(writers: int) -> tuple[list[Writer], ClusterDocument]:
    nodes = [Writer() for _ in range(writers)]
    receiver = ClusterDocument()
    for node in nodes:
        for update in node.beat():
            assert receiver.apply_remote(update).accepted
    return nodes, receiver


class Bench:
    """One receiver document of `writers` writers and the timings of what it was handed."""

    def __init__(self, writers: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.nodes, self.receiver = build(writers)
        self.timings: dict[str, list[float]] = {"new": [], "duplicate": [], "out of order": []}
        self.number = 0

    def step(self) -> None:
        node = self.nodes[self.rng.randrange(len(self.nodes))]
        receiver, timings = self.receiver, self.timings
        self.number += 1
        if self.number % 20 == 0:
            (skipped,) = node.beat()
            (later,) = node.beat()
            started = time.perf_counter()
            result = receiver.apply_remote(later)
            timings["out of order"].append(time.perf_counter() - started)
            assert result.missing, result
            assert receiver.apply_remote(skipped).accepted and receiver.apply_remote(later).accepted
            return
        (update,) = node.beat()
        started = time.perf_counter()
        result = receiver.apply_remote(update)
        timings["new"].append(time.perf_counter() - started)
        assert result.accepted and result.added, result
        started = time.perf_counter()
        receiver.apply_remote(update)
        timings["duplicate"].append(time.perf_counter() - started)

    def figures(self) -> dict[str, float]:
        figures = {}
        for kind, values in self.timings.items():
            figures[f"{kind} median"] = statistics.median(values) * 1e6
            figures[f"{kind} mean"] = statistics.fmean(values) * 1e6
        figures["rebuilds"] = self.receiver.rebuilds
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, nargs="+", default=[10, 2000])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    benches = {writers: Bench(writers, args.seed) for writers in args.writers}
    for _ in range(args.samples):
        for bench in benches.values():
            bench.step()
    results = {writers: bench.figures() for writers, bench in benches.items()}
    for writers in args.writers:
        print(
            f"{writers} writers: "
            + ", ".join(
                f"{name} {value:,.0f}" + ("" if name == "rebuilds" else " us")
                for name, value in results[writers].items()
            )
        )
    low, high = min(results), max(results)
    print(
        f"ratio {high}/{low} writers: "
        + ", ".join(
            f"{name} {results[high][name] / results[low][name]:.2f}x"
            for name in results[low]
            if name != "rebuilds" and results[low][name]
        )
    )


if __name__ == "__main__":
    main()
