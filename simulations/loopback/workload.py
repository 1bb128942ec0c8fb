"""Workload files and fault schedules for the loopback cluster harness (parsing only, no I/O
beyond reading the file and checking that the paths it names exist).

A workload is a TOML file with `[[step]]` tables, each with `do` and an optional `at` (offset
from the start of the workload phase, e.g. "10s"; default 0):

    do = "submit"   node = 0 | "any", count = 1, args = [...form submit arguments...],
                    context = "dir" | wasm_c = "prog.c", inputs = ["file", ...]
    do = "label"    node = 1, set = {k = "v"}, remove = ["k"]
    do = "wait"     timeout = "120s"   (until every job submitted so far is final everywhere)
    do = "kill"     node = 2           (kill -9)
    do = "term"     node = 3           (SIGTERM: the node leaves)
    do = "restart"  node = 2           (`formd run` again on the same state dir)

Paths are relative to the workload file. kill/term/restart fire at their `at` whatever the
other steps are doing (faults do not wait for a submission to finish); submit/label/wait run
one after another, each not before its `at`. `--kill 2@10s` on the command line is the same
as a kill step.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from metrics_agent.units import UnitError, parse_duration

FAULTS = ("kill", "term", "restart")
ACTIONS = ("submit", "label", "wait")
ANY_NODE = "any"
MAX_COUNT = 10_000

_ALLOWED_KEYS = {
    "submit": {"node", "count", "args", "context", "wasm_c", "inputs"},
    "label": {"node", "set", "remove"},
    "wait": {"timeout"},
    "kill": {"node"},
    "term": {"node"},
    "restart": {"node"},
}


class WorkloadError(ValueError):
    """A workload file or schedule option that cannot be run; the message says where and why."""


@dataclass(frozen=True)
class Step:
    do: str
    at_s: float = 0.0
    node: int | str = 0  # an index into the cluster, or "any" (submit round-robin over running nodes)
    count: int = 1
    args: tuple[str, ...] = ()
    context: Path | None = None
    wasm_c: Path | None = None
    inputs: tuple[Path, ...] = ()
    set_labels: dict[str, str] = field(default_factory=dict)
    remove_labels: tuple[str, ...] = ()
    timeout_s: float = 120.0

    @property
    def is_fault(self) -> bool:
        return self.do in FAULTS

    def describe(self) -> str:
        if self.do == "submit":
            return f"submit {self.count} via {'any node' if self.node == ANY_NODE else f'n{self.node}'}"
        if self.do == "label":
            changes = [f"{k}={v}" for k, v in sorted(self.set_labels.items())] + [
                f"-{k}" for k in self.remove_labels
            ]
            return f"label n{self.node} {' '.join(changes)}"
        if self.do == "wait":
            return f"wait for jobs (up to {self.timeout_s:g}s)"
        return f"{self.do} n{self.node}"


def parse_fault(text: str, do: str, nodes: int) -> Step:
    """`2@10s` (node index @ offset from the start of the workload phase) -> a fault step."""
    index, sep, when = text.partition("@")
    if not sep:
        raise WorkloadError(f"--{do} {text!r}: write NODE@TIME, e.g. 2@10s")
    node = _node_index(index.strip(), nodes, f"--{do} {text!r}")
    return Step(do=do, at_s=_duration(when.strip(), f"--{do} {text!r}"), node=node)


def load_workload(path: Path, nodes: int) -> list[Step]:
    """Read and check a whole workload file; nothing runs unless every step is valid."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise WorkloadError(f"workload {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"workload {path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"step", "description"}
    if unknown:
        raise WorkloadError(
            f"workload {path}: unknown top-level key(s) {', '.join(sorted(unknown))}; expected [[step]] tables"
        )
    raw_steps = data.get("step", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        raise WorkloadError(f"workload {path}: no [[step]] tables")
    return [
        _parse_step(raw, path.parent, nodes, f"workload {path}, step {number}")
        for number, raw in enumerate(raw_steps, 1)
    ]


def _parse_step(raw: object, base: Path, nodes: int, where: str) -> Step:
    if not isinstance(raw, dict):
        raise WorkloadError(f"{where}: a step must be a table")
    do = raw.get("do")
    if do not in _ALLOWED_KEYS:
        raise WorkloadError(f"{where}: `do` must be one of {', '.join(_ALLOWED_KEYS)} (got {do!r})")
    unknown = set(raw) - _ALLOWED_KEYS[do] - {"do", "at"}
    if unknown:
        raise WorkloadError(f"{where}: unknown key(s) for {do}: {', '.join(sorted(unknown))}")
    at_s = _duration(raw.get("at", 0), f"{where}: at")
    if do == "wait":
        return Step(do=do, at_s=at_s, timeout_s=_duration(raw.get("timeout", "120s"), f"{where}: timeout"))
    node_value = raw.get("node", 0)
    if do == "submit" and node_value == ANY_NODE:
        node: int | str = ANY_NODE
    else:
        node = _node_index(node_value, nodes, f"{where}: node")
    if do == "label":
        return _label_step(raw, at_s, node, where)
    if do == "submit":
        return _submit_step(raw, at_s, node, base, where)
    return Step(do=do, at_s=at_s, node=node)


def _label_step(raw: dict, at_s: float, node: int | str, where: str) -> Step:
    set_labels = raw.get("set", {})
    remove = raw.get("remove", [])
    if not isinstance(set_labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in set_labels.items()
    ):
        raise WorkloadError(f'{where}: `set` must be a table of strings, e.g. set = {{zone = "b"}}')
    if not isinstance(remove, list) or not all(isinstance(k, str) for k in remove):
        raise WorkloadError(f"{where}: `remove` must be a list of label keys")
    if not set_labels and not remove:
        raise WorkloadError(f"{where}: a label step needs `set` or `remove`")
    return Step(do="label", at_s=at_s, node=node, set_labels=dict(set_labels), remove_labels=tuple(remove))


def _submit_step(raw: dict, at_s: float, node: int | str, base: Path, where: str) -> Step:
    count = raw.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise WorkloadError(f"{where}: count must be a whole number from 1 to {MAX_COUNT}")
    args = raw.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise WorkloadError(f"{where}: args must be a list of strings (form submit arguments)")
    if ("context" in raw) == ("wasm_c" in raw):
        raise WorkloadError(
            f"{where}: give exactly one of `context` (a directory) or `wasm_c` (a C file compiled to WASM)"
        )
    context = _existing(base, raw.get("context"), where, "context", directory=True)
    wasm_c = _existing(base, raw.get("wasm_c"), where, "wasm_c", directory=False)
    inputs = raw.get("inputs", [])
    if not isinstance(inputs, list):
        raise WorkloadError(f"{where}: inputs must be a list of file paths")
    files = tuple(_existing(base, item, where, "input", directory=False) for item in inputs)
    return Step(
        do="submit",
        at_s=at_s,
        node=node,
        count=count,
        args=tuple(args),
        context=context,
        wasm_c=wasm_c,
        inputs=files,
    )


def _existing(base: Path, value: object, where: str, what: str, *, directory: bool) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise WorkloadError(f"{where}: {what} must be a path")
    path = (base / value).resolve()
    if not (path.is_dir() if directory else path.is_file()):
        raise WorkloadError(
            f"{where}: {what} {value!r} is not {'a directory' if directory else 'a file'} (looked at {path})"
        )
    return path


def _node_index(value: object, nodes: int, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < nodes:
        raise WorkloadError(f"{where}: node must be an index from 0 to {nodes - 1} (got {value!r})")
    return value


def _duration(value: object, where: str) -> float:
    try:
        seconds = parse_duration(value)  # type: ignore[arg-type]
    except (UnitError, TypeError) as exc:
        raise WorkloadError(f"{where}: {exc}") from None
    if seconds < 0:
        raise WorkloadError(f"{where}: must not be negative")
    return seconds
