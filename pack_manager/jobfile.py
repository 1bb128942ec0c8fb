"""Job files (`form submit --spec job.toml`): every submit option under a key named like its
long option, read and checked here. Pure apart from reading the one file.

Keys use '_' or '-' alike (`gpu_model` = `gpu-model`). `context` and `input` are paths
relative to the file's directory; `context` defaults to that directory. List options take a
list or, for one value, a plain string; `label` and `prefer` also take a table, `env` only a
table. An unknown key or a value of the wrong type is refused naming the key; the values
themselves (units, selectors, names) are checked where the command line's are.
"""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

TEXT = "text"
TEXTS = "list of text"
PAIRS = "list of k=v or a table"
TABLE = "table of text"
INTEGER = "integer"
BOOLEAN = "true or false"
PATH = "path"
PATHS = "list of paths"
COMMAND = "command"

KEYS = {
    "kind": TEXT,
    "context": PATH,
    "file": TEXT,
    "image": TEXT,
    "pull": TEXT,
    "tag": TEXT,
    "cmd": COMMAND,
    "module": TEXT,
    "input": PATHS,
    "cpu": TEXT,
    "memory": TEXT,
    "disk": TEXT,
    "gpu": INTEGER,
    "gpu_model": TEXT,
    "gpu_memory": TEXT,
    "label": PAIRS,
    "prefer": PAIRS,
    "select": TEXTS,
    "capability": TEXTS,
    "region": TEXT,
    "placement_key": TEXT,
    "retries": INTEGER,
    "retry_delay": TEXT,
    "queue_timeout": TEXT,
    "shards": INTEGER,
    "split_inputs": BOOLEAN,
    "env": TABLE,
    "timeout": TEXT,
    "replicas": INTEGER,
    "network": BOOLEAN,
    "prefer_local_inputs": BOOLEAN,
}


class JobFileError(ValueError):
    """A job file that cannot be used; the message names the file and the key."""


def load_job_file(path: Path) -> dict[str, Any]:
    """{option: value} for every key the file sets, plus `context` (default: its directory).
    Values: str, int, bool, list[str] (pairs as 'k=v', cmd split like a shell), dict[str, str]
    for env, absolute Paths for context and input."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobFileError(f"{path}: cannot read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JobFileError(f"{path}: not valid TOML ({exc})") from None
    base = path.resolve().parent
    options: dict[str, Any] = {"context": base}
    for key, value in raw.items():
        name = key.replace("-", "_")
        kind = KEYS.get(name)
        if kind is None:
            raise JobFileError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(KEYS))})")
        try:
            options[name] = _value(kind, value, base)
        except JobFileError as exc:
            raise JobFileError(f"{path}: {key}: {exc}") from None
    return options


def _value(kind: str, value: Any, base: Path) -> Any:
    if kind == TEXT:
        return _text(value)
    if kind == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise JobFileError(f"expected an integer, got {value!r}")
        return value
    if kind == BOOLEAN:
        if not isinstance(value, bool):
            raise JobFileError(f"expected true or false, got {value!r}")
        return value
    if kind == PATH:
        return base / _text(value)
    if kind == PATHS:
        return [base / item for item in _texts(value)]
    if kind == COMMAND:
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as exc:
                raise JobFileError(str(exc)) from None
        return _texts(value)
    if kind == TABLE:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise JobFileError(f'expected a table of key = "value", got {value!r}')
        return dict(value)
    if kind == PAIRS and isinstance(value, dict):
        if not all(isinstance(v, str) for v in value.values()):
            raise JobFileError(f'expected a table of key = "value", got {value!r}')
        return [f"{k}={v}" for k, v in value.items()]
    return _texts(value)  # TEXTS, and PAIRS given as a list


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise JobFileError(f"expected text, got {value!r}")
    return value


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise JobFileError(f"expected text or a list of text, got {value!r}")
    return list(value)
