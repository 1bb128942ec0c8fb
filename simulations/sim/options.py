"""What one simulation run is asked to do, and the parsers for the command-line forms.

Human forms (the CLI's; errors say what was expected):
    durations   "30s", "500ms", "2m", "1h", "15" (seconds)
    latency     "1ms..20ms" (uniform between) or "5ms" (fixed)
    shares      "5%" (of the nodes) or "3" (nodes)
    partitions  "30s@60s" (30 s long, starting 60 s into the active phase), optionally
                "30s@60s/0.3" (the smaller side holds 30% of the nodes; default half)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from daemon.config import FormdConfig
from metrics_agent.named_capabilities import CapabilityNameError, parse_assignment
from metrics_agent.units import UnitError, parse_cpu, parse_duration
from pack_manager.placement import POLICIES

INJECTIONS = ("duplicate-success", "orphan-claim")


class OptionError(ValueError):
    """A simulation option that cannot be used; the message names it and the expected form."""


@dataclass(frozen=True)
class Partition:
    start_s: float  # from the start of the active phase
    duration_s: float
    minority: float = 0.5  # share of the nodes on the smaller side

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class Amount:
    """Some of the nodes: a share ("5%") or a count ("3")."""

    share: float = 0.0
    count: int | None = None

    def of(self, nodes: int) -> int:
        return min(nodes, self.count if self.count is not None else round(self.share * nodes))

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.share * 100:g}%"


NONE = Amount()
FORMD = FormdConfig()  # node settings default to what formd ships


@dataclass(frozen=True)
class SimOptions:
    nodes: int = 50
    seconds: float = 60.0  # the active phase: workload and faults
    seed: int = 1
    report_dir: Path | None = None
    # workload
    jobs: int = 0
    job_duration: tuple[float, float] = (1.0, 10.0)
    job_cpu: tuple[int, ...] = (250, 500, 1000, 2000)  # millicores, one picked per job
    job_shards: int = 1  # each job submitted as this many shards (pack_manager/shards.py); 1: unsharded
    # named capabilities: (name, max_concurrency) offered by `capability_nodes` of the nodes;
    # `capability_jobs` of the jobs need one of them (picked per job)
    capabilities: tuple[tuple[str, int], ...] = ()
    capability_nodes: Amount = NONE
    capability_jobs: float = 0.0
    policy: str = "hashed-xor"
    # network
    loss: float = 0.0
    latency: tuple[float, float] = (0.001, 0.020)
    seal: bool = True
    # faults
    crash: Amount = NONE  # nodes crashed during the active phase
    restart: float = 0.5  # share of the crashed nodes that come back
    restart_after: float = 30.0
    wipe: float = 0.0  # share of the restarts that come back with an empty state dir (and a new key)
    wipe_keeps_key: bool = False  # ... but with the old key (same node id, incarnation from 1)
    partitions: tuple[Partition, ...] = ()
    slow: Amount = NONE
    slow_latency: float = 0.2  # added to every message to or from a slow node
    slow_factor: float = 3.0  # a slow node's tick and gossip intervals are this many times longer
    # node settings (formd.toml's defaults unless given)
    gossip_interval: float = FORMD.gossip_interval_ms / 1000
    fanout: int = FORMD.gossip_fanout
    tick_interval: float = FORMD.tick_interval_ms / 1000
    anti_entropy_interval: float = FORMD.anti_entropy_interval_s
    retransmit_mult: int = FORMD.retransmit_mult
    heartbeat_retransmit_mult: int = FORMD.heartbeat_retransmit_mult
    # phases
    quiet: float = 15.0  # start of the active phase with neither jobs nor faults: steady traffic, probes
    probes: int = 5
    settle: float = 120.0  # after the active phase, at most this long for the jobs to finish
    join_over: float | None = (
        None  # nodes start spread over this long (default 5 ms per node; 0 with warm_start)
    )
    warm_start: bool = False  # every node starts from the document of a cluster that already formed
    # extras
    sizes: tuple[int, ...] = ()  # convergence-only runs at these sizes, for the size plot
    compare_policies: bool = False  # the same run again with the other placement policy
    doc_hours: float = 0.0  # document-only heartbeat simulation of this many hours (0: skip)
    doc_nodes: int = 100
    doc_only: bool = False  # run only the document-only simulation
    progress: bool = False  # print simulated vs real time as the run goes
    plots: bool = True
    inject: tuple[str, ...] = field(default=())  # break an invariant on purpose (checks the checker)

    def __post_init__(self) -> None:
        problems = []
        if self.nodes < 1:
            problems.append("--nodes must be at least 1")
        if self.seconds <= 0:
            problems.append("--seconds must be positive")
        if self.jobs < 0:
            problems.append("--jobs must be 0 or more")
        if not 1 <= self.job_shards <= 64:
            problems.append("--job-shards must be 1..64")
        if self.capability_jobs and not (self.capabilities and self.capability_nodes.of(self.nodes)):
            problems.append("--capability-jobs needs --capabilities and --capability-nodes offering them")
        if self.capabilities and self.warm_start:
            # The warm start's formed document holds the plain record for every node.
            problems.append("--capabilities cannot be combined with --warm-start")
        if not 0 <= self.capability_jobs <= 1:
            problems.append("--capability-jobs must be a share between 0% and 100%")
        for name in ("fanout", "retransmit_mult", "heartbeat_retransmit_mult"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        for name, flag in (
            ("gossip_interval", "--gossip-interval"),
            ("tick_interval", "--tick"),
            ("anti_entropy_interval", "--anti-entropy"),
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{flag} must be positive")
        if self.probes < 0 or self.slow_factor < 1:
            problems.append("--probes must be 0 or more and --slow-factor at least 1")
        if not 0 <= self.loss < 1:
            problems.append("--loss must be a probability in [0, 1)")
        if self.policy not in POLICIES:
            problems.append(f"--policy must be one of {', '.join(POLICIES)}")
        if self.quiet >= self.seconds and (self.jobs or self.crash.of(self.nodes) or self.partitions):
            problems.append(
                f"--quiet ({self.quiet:g} s) leaves no time for jobs and faults in --seconds ({self.seconds:g} s)"
            )
        for name in ("restart", "wipe"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"--{name} must be a share between 0% and 100%")
        for partition in self.partitions:
            if partition.end_s > self.seconds:
                problems.append(
                    f"--partition ending at {partition.end_s:g} s is past --seconds {self.seconds:g}"
                )
        for name in self.inject:
            if name not in INJECTIONS:
                problems.append(f"--inject {name!r}: one of {', '.join(INJECTIONS)}")
        if problems:
            raise OptionError("; ".join(problems))

    @property
    def join_window(self) -> float:
        if self.join_over is not None:
            return self.join_over
        # A warm start is a restart of a formed cluster: nodes that start later would be
        # probed before they serve and suspected, a storm of suspicions that is not the
        # steady state the run is after.
        return 0.0 if self.warm_start else 0.005 * self.nodes


def duration(text: str, what: str) -> float:
    try:
        value = parse_duration(text.strip())
    except UnitError as exc:
        raise OptionError(f"{what}: {exc}") from None
    if value < 0:
        raise OptionError(f"{what}: {text!r} is negative")
    return value


def latency_range(text: str) -> tuple[float, float]:
    low_text, sep, high_text = text.partition("..")
    low = duration(low_text, "--latency")
    high = duration(high_text, "--latency") if sep else low
    if high < low:
        raise OptionError(f"--latency: {text!r} goes down; write LOW..HIGH")
    return low, high


def duration_range(text: str, what: str) -> tuple[float, float]:
    low_text, sep, high_text = text.partition("..")
    low = duration(low_text, what)
    high = duration(high_text, what) if sep else low
    if high < low or low <= 0:
        raise OptionError(f"{what}: {text!r} must be a positive LOW..HIGH")
    return low, high


def amount(text: str, what: str) -> Amount:
    """'5%' -> a share of the nodes; '3' -> three nodes."""
    text = text.strip()
    if text.endswith("%"):
        return Amount(share=percentage(text, what))
    if not text.isdigit():
        raise OptionError(f"{what}: {text!r} is neither a percentage like 5% nor a whole number of nodes")
    return Amount(count=int(text))


def percentage(text: str, what: str) -> float:
    """'50%' or '0.5' -> 0.5 (a plain share, never a count)."""
    text = text.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise OptionError(f"{what}: {text!r} is not a percentage like 50%") from None
    if not 0 <= value <= 1:
        raise OptionError(f"{what}: {text!r} is outside 0%..100%")
    return value


def probability(text: str, what: str) -> float:
    value = percentage(text, what)
    if value >= 1:
        raise OptionError(f"{what}: {text!r} would lose every message")
    return value


def partition(text: str) -> Partition:
    spec, _, minority_text = text.partition("/")
    length_text, sep, start_text = spec.partition("@")
    if not sep:
        raise OptionError(f"--partition: {text!r} is not DURATION@START such as 30s@60s")
    minority = percentage(minority_text, "--partition share") if minority_text else 0.5
    if not 0 < minority <= 0.5:
        raise OptionError(f"--partition: the smaller side's share {minority:g} must be in (0, 0.5]")
    length = duration(length_text, "--partition")
    if length <= 0:
        raise OptionError(f"--partition: {text!r} lasts no time")
    return Partition(duration(start_text, "--partition"), length, minority)


def cpu_choices(text: str) -> tuple[int, ...]:
    try:
        values = tuple(parse_cpu(item.strip()) for item in text.split(",") if item.strip())
    except UnitError as exc:
        raise OptionError(f"--job-cpu: {exc}") from None
    if not values or min(values) <= 0:
        raise OptionError("--job-cpu: give one or more CPU amounts such as 250m,1,2")
    return values


def named_capabilities(text: str) -> tuple[tuple[str, int], ...]:
    """'inference:llama3=1,video:h264=2' -> (('inference:llama3', 1), ('video:h264', 2))."""
    try:
        pairs = dict(parse_assignment(item, "--capabilities") for item in text.split(",") if item.strip())
    except CapabilityNameError as exc:
        raise OptionError(str(exc)) from None
    if not pairs:
        raise OptionError("--capabilities: give NAME=MAX items such as inference:llama3=1,video:h264=2")
    return tuple(sorted(pairs.items()))


def sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise OptionError(f"--sizes: {text!r} is not a list of node counts such as 10,100,1000") from None
    if not values or min(values) < 2:
        raise OptionError("--sizes: each size must be 2 or more")
    return values
