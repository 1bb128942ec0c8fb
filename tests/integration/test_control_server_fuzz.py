"""Thousands of malformed and mutated control requests against a real formd: every one is
answered with an error, none is an internal error, nothing the daemon holds changes, and the
daemon keeps serving.

Each request is a valid one of some method with exactly one part broken (wrong types, huge
and negative numbers, traversal names, bad digests, deep nesting, invalid UTF-8, a broken
envelope), so any "ok" reply is a hole in the checks.
"""

import base64
import json
import os
import random
import socket
import subprocess
from pathlib import Path

import pytest
from procs import Cluster, job_status, wait_until
from wasm_jobs import WASM_DIR

from pack_manager.context_archive import file_digest, pack_context

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("FUZZ_SEED", "1414"))
ROUNDS = 12  # per (method, field): each round draws fresh mutations


class Line:
    """One request line on a persistent control connection."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.buffer = b""

    def ask(self, line: bytes) -> bytes:
        self.sock.sendall(line if line.endswith(b"\n") else line + b"\n")
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"formd closed the connection on {line[:120]!r}"
            self.buffer += chunk
        reply, _, self.buffer = self.buffer.partition(b"\n")
        return reply

    def close(self) -> None:
        self.sock.close()


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


DEEP = [
    nested(3000),
    nested(100_000),
    '{"a":' * 5000 + "1" + "}" * 5000,
    nested(400_000)[:600_000],  # unbalanced as well
]
BAD_DIGESTS = [
    "",
    "zz",
    "0" * 63,
    "0" * 65,
    "G" * 64,
    "../../../../etc/passwd",
    "/etc/passwd",
    "0" * 62 + "/.",
    "\x00" * 64,
    "0" * 64 + "\n",
]
TRAVERSAL = [
    "../x",
    "../../../../etc/passwd",
    "/etc/passwd",
    "a/../../b",
    "",
    ".",
    "..",
    "a\x00b",
    "a" * 5000,
]
HUGE = [2**63, 2**64 + 5, 10**40, -(2**63) - 1]
WRONG_TYPES = [None, True, False, 1.5, "text", [], {}, [1, 2], {"a": 1}, -1, 0, 2**70]


def wrong_type_for(value):
    return [v for v in WRONG_TYPES if type(v) is not type(value) and v is not None]


def fuzz_values(rng: random.Random, good, specific: list) -> list:
    """Values for one field: its field-specific bad values plus type-wrong and deep ones."""
    pool = list(specific) + wrong_type_for(good)
    if not isinstance(good, str):
        pool += [json.loads('"x"')]  # text where something else is wanted
    values = rng.sample(pool, min(len(pool), 6))
    return values


def templates(ctx_digest: str, input_digest: str, job_id: str, key_id: str) -> dict:
    """method -> (a valid params object, {field: bad values for it})."""
    submit = {
        "kind": "wasm",
        "context": ctx_digest,
        "module": "upcase.wasm",
        "inputs": [["in.txt", input_digest]],
        "command": ["in.txt"],
        "requirements": {"cpu": "100m", "memory": "64MiB"},
        "timeout_ms": 60_000,
        "env": {"A": "1"},
        "network": False,
        "replicas": 1,
        "prefer_local_inputs": False,
    }
    return {
        "blob.put": (
            {"digest": input_digest, "size": 10, "offset": 0, "data": base64.b64encode(b"x" * 10).decode()},
            {
                "digest": BAD_DIGESTS,
                "size": [-1, -(2**40), *HUGE],
                "offset": [-1, -(2**40), 11, *HUGE],
                "data": ["not base64!", "QQ", "\udcff", "A" * 7],
            },
        ),
        "blob.read": (
            {"digest": input_digest, "offset": 0, "length": 10},
            {"digest": BAD_DIGESTS, "offset": [-1, *HUGE], "length": [-1, -(2**40), *HUGE[3:]]},
        ),
        "job.submit": (
            submit,
            {
                "kind": ["", "RUN", "shell", "../run", "wasm\x00"],
                "context": BAD_DIGESTS + ["0" * 64],
                "module": TRAVERSAL + ["0" * 64],
                "inputs": [
                    [["../../etc/passwd", input_digest]],
                    [["/abs", input_digest]],
                    [["in.txt", "0" * 64]],
                    [["in.txt"]],
                    [["in.txt", input_digest, "extra"]],
                    [[1, input_digest]],
                    [["in.txt", input_digest], ["in.txt", input_digest]],
                    [[name, input_digest] for name in TRAVERSAL[:3]],
                    [["in.txt", d] for d in BAD_DIGESTS[:3]],
                ],
                "command": [[1], [None], [{"a": 1}], ["a\x00b"], ["x" * 200_000]],
                "requirements": [
                    {"cpu": "-1"},
                    {"cpu": 5},
                    {"memory": "-5GiB"},
                    {"memory": "lots"},
                    {"disk": "1e999"},
                    {"gpu": -1},
                    {"gpu": "one"},
                    {"gpu": 2**70},
                    {"labels": "a=b"},
                    {"labels": ["no value"]},
                    {"prefer": [1]},
                    {"gpu_memory": "-1GiB"},
                    {"unknown": 1},
                ],
                "timeout_ms": [-1, 0, *HUGE],
                "env": [{"1BAD": "x"}, {"A": 1}, {"A": None}, {"": "x"}, {"A": "x\x00y"}, {"A=B": "c"}],
                "network": ["yes", 1],
                "replicas": [0, -1, *HUGE, 1.0],
                "prefer_local_inputs": ["yes", 1],
            },
        ),
        "job.submit-many": (
            {"jobs": [submit]},
            {
                "jobs": [
                    [],
                    [submit] * 1001,
                    [submit, 1],
                    [submit, {**submit, "kind": "shell"}],
                    [{**submit, "replicas": 0}, submit],
                    "all",
                    [[submit]],
                ]
            },
        ),
        "job.status": ({"job": job_id}, {"job": ["", "abc", "zz" * 8, "0" * 8, job_id + "0", "../" * 4]}),
        "job.cancel": ({"job": job_id}, {"job": ["", "abc", "zz" * 8, "f" * 64, "../" * 4, job_id[:7]]}),
        "job.explain": ({"job": job_id}, {"job": ["", "1234567", "g" * 10, "f" * 64]}),
        "job.log": ({"job": job_id, "offset": 0}, {"job": ["", "f" * 64], "offset": [-1, *HUGE[3:]]}),
        "job.files": (
            {"job": job_id, "which": "outputs"},
            {"job": ["", "f" * 64], "which": ["", "../log", "inputs", "LOG"]},
        ),
        "job.list": ({"state": "succeeded"}, {"state": ["", "SUCCEEDED", "done", "../x"]}),
        "cluster-key.add": (
            {"key": base64.b64encode(os.urandom(32)).decode()},
            {
                "key": [
                    "",
                    "not base64",
                    base64.b64encode(b"short").decode(),
                    base64.b64encode(os.urandom(64)).decode(),
                ]
            },
        ),
        "cluster-key.use": ({"key_id": key_id}, {"key_id": ["", "zz", "0" * 16, "0" * 15, key_id + "00"]}),
        "cluster-key.remove": ({"key_id": key_id}, {"key_id": ["", "zz", "0" * 16, key_id]}),
        "label.set": (
            {"labels": {"zone": "a"}},
            {
                "labels": [
                    {},
                    {"bad key!": "x"},
                    {"zone": 1},
                    {"zone": {"a": "b"}},
                    {"": "x"},
                    {"k" * 500: "v"},
                    {"zone": "v" * 5000},
                ]
            },
        ),
        "label.remove": ({"keys": ["zone"]}, {"keys": [[], ["nosuch"], [1], "zone", [["zone"]]]}),
    }


# Fields whose absence is an error (others have defaults); every field when not listed.
REQUIRED_DEFAULT = ("digest", "size", "offset", "data", "length", "job", "which", "jobs", "key", "key_id")
REQUIRED = {
    "job.submit": ("kind", "context", "module"),
    "job.log": ("job",),
    "job.list": (),
    "label.set": ("labels",),
    "label.remove": ("keys",),
}

# Methods that read only and take no parameters: only a broken envelope makes them fail.
PLAIN = ["nodes", "status", "job.limits", "job.records", "cluster-key.list"]


def envelope_breakers(rng: random.Random, method: str, params: dict) -> list[bytes]:
    good = json.dumps({"method": method, "params": params}).encode()
    cut = rng.randrange(1, len(good) - 1)
    spot = rng.randrange(1, len(good) - 1)
    bad_utf8 = rng.choice(
        [b"\xff", b"\x80", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]
    )
    return [
        good[:cut],  # truncated: never a whole object
        good[:spot] + bad_utf8 + good[spot:],
        json.dumps({"method": method, "params": params, "extra": 1}).encode(),
        json.dumps(
            {"method": rng.choice([1, None, [], "", "../" + method, method.upper(), method + "."])}
        ).encode(),
        json.dumps({"method": method, "params": rng.choice([[], "x", 5, True])}).encode(),
        json.dumps([method, params]).encode(),
        ('{"method":"%s","params":{"x":%s}}' % (method, rng.choice(DEEP))).encode(),
        rng.choice(DEEP).encode(),
        b'{"method":"%s","params":{"x":"\\ud800' % method.encode() + b'"},"y":1}',
    ]


def requests(rng: random.Random, table: dict) -> list[tuple[str, bytes]]:
    out = []
    for method in PLAIN:
        for _ in range(ROUNDS):
            out += [(method, line) for line in envelope_breakers(rng, method, {})]
    for method, (good, fields) in table.items():
        for _ in range(ROUNDS):
            out += [(method, line) for line in envelope_breakers(rng, method, good)]
            for field, specific in fields.items():
                for value in fuzz_values(rng, good[field], specific):
                    params = {**good, field: value}
                    out.append(
                        (
                            f"{method} {field}={value!r:.100}",
                            json.dumps({"method": method, "params": params}).encode(),
                        )
                    )
                if field in REQUIRED.get(method, REQUIRED_DEFAULT):
                    missing = {k: v for k, v in good.items() if k != field}
                    out.append((method, json.dumps({"method": method, "params": missing}).encode()))
    rng.shuffle(out)
    return out


def snapshot(node) -> dict:
    """Everything a bad request could have changed, as plain data."""
    status = node.call("status")
    blob_root = node.state_dir / "blobs"
    return {
        "jobs": node.call("job.list"),
        "records": node.call("job.records"),
        "keys": node.call("cluster-key.list"),
        "labels": status["labels"],
        "nodes": sorted(n["id"] for n in node.call("nodes")),
        "blobs": sorted(str(p.relative_to(blob_root)) for p in blob_root.rglob("*") if p.is_file()),
        "formd.toml": (node.state_dir / "formd.toml").read_bytes(),
        "cluster.key": node.key_file.read_bytes(),
    }


def test_thousands_of_bad_requests_get_errors_and_change_nothing(tmp_path):
    root = tmp_path / "job"
    (root / "context").mkdir(parents=True)
    subprocess.run(["bash", str(WASM_DIR / "build.sh"), str(root / "context")], check=True)
    (root / "in.txt").write_bytes(b"fuzz me\n")
    with Cluster(tmp_path / "nodes") as cluster:
        a = cluster.add("a", labels=["zone=a"])
        job_id = a.form(
            "submit", str(root / "context"), "--kind", "wasm", "--module", "upcase.wasm",
            "--input", str(root / "in.txt"), "--cmd", "in.txt",
        ).stdout.split()[-1]  # fmt: skip
        wait_until(lambda: job_status(a, job_id)["state"] == "succeeded", 30, "the real job to succeed")
        pack_context(root / "context", tmp_path / "ctx.tar")
        ctx_digest = file_digest(tmp_path / "ctx.tar")
        input_digest = file_digest(root / "in.txt")
        key_id = a.call("cluster-key.list")[0]["key_id"]
        before = snapshot(a)

        rng = random.Random(SEED)
        batch = requests(rng, templates(ctx_digest, input_digest, job_id, key_id))
        connection = Line(a.socket)
        internal, accepted = [], []
        try:
            for number, (method, line) in enumerate(batch):
                if number % 500 == 0:  # a fresh connection now and then, as clients come and go
                    connection.close()
                    connection = Line(a.socket)
                reply = json.loads(connection.ask(line))
                if reply["ok"] is not False:
                    accepted.append((method, line[:200], reply))
                    continue
                assert isinstance(reply["error"], str) and reply["error"], (method, line[:300])
                if reply["error"].startswith("internal error"):
                    internal.append((method, line[:200], reply["error"]))
        finally:
            connection.close()
        print(f"\n{len(batch)} bad requests (seed {SEED}), all refused")
        assert not accepted, "\n".join(sorted({a[0] for a in accepted}))
        assert not internal, sorted({i[0] for i in internal})
        assert a.running()
        assert snapshot(a) == before
        assert a.call("status")["id"] == a.node_id  # still serving
