"""`make demo`: three real formd nodes on 127.0.0.1 doing real work, narrated.

It starts one Podman API service and the local base image, initialises three nodes (one
cluster key, distinct ports and state dirs under ./demo-cluster/), waits until they see each
other, shows `form nodes`, submits a Containerfile build and a WASM job through node a,
shows `form explain`, follows a log, fetches the results, and stops every node with SIGTERM
(they leave the cluster gracefully). Every command it runs is printed first, as you would type it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pack_manager.base_image import BASE_IMAGE, ensure_base_image
from pack_manager.podman_service import start_service, stop_service

ROOT = Path.cwd() / "demo-cluster"
BIN = Path(sys.executable).parent
SETTINGS = ["tick_interval_ms=500", "gossip_interval_ms=100", "anti_entropy_interval_s=5.0"]


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    print(f"$ {shown.replace(str(BIN) + '/', '')}", flush=True)
    done = subprocess.run(args, text=True, capture_output=True)
    print(done.stdout, end="", flush=True)
    if done.returncode and check:
        print(done.stderr, end="", file=sys.stderr)
        raise SystemExit(f"demo: {args[1] if len(args) > 1 else args[0]} failed (exit {done.returncode})")
    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir()
    say("Podman API service and the local base image (no registry is reachable here)")
    podman, url = start_service(ROOT / "podman")
    processes: list[subprocess.Popen] = []
    try:
        ensure_base_image(url)
        print(f"podman at {url}; base image {BASE_IMAGE}")
        say("Three nodes: a starts a new cluster, b and c join through a")
        names, seed, key = ["a", "b", "c"], None, None
        for name in names:
            state = ROOT / name
            args = [
                str(BIN / "formd"),
                "init",
                "--state-dir",
                str(state),
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--http-listen",  # each node its own HTTPS port: three nodes share this host
                f"127.0.0.1:{free_port()}",
                "--label",
                f"name={name}",
                "--set",
                f"podman_url={json.dumps(url)}",
            ]
            args += [item for s in SETTINGS for item in ("--set", s)]
            args += ["--new-cluster-key"] if key is None else ["--cluster-key-file", str(key), "--seed", seed]
            run(*args)
            if key is None:
                key = state / "cluster.key"
                seed = next(
                    line.split("=", 1)[1].strip().strip('"')
                    for line in (state / "formd.toml").read_text().splitlines()
                    if line.startswith("listen")
                )
            log = open(state / "formd.log", "w")
            processes.append(
                subprocess.Popen(
                    [str(BIN / "formd"), "run", "--state-dir", str(state)], stderr=log, stdout=log
                )
            )
        sockets = {name: str(ROOT / name / "formd.sock") for name in names}

        def form(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
            return run(str(BIN / "form"), "--socket", sockets[name], *args, check=check)

        deadline = time.monotonic() + 60
        while True:
            try:
                listing = subprocess.run(
                    [str(BIN / "form"), "--socket", sockets["a"], "nodes", "--json"],
                    capture_output=True,
                    text=True,
                )
                nodes = json.loads(listing.stdout) if listing.returncode == 0 else []
            except json.JSONDecodeError:
                nodes = []
            podman_nodes = [n for n in nodes if n["status"] == "alive" and "podman" in n["executors"]]
            if len(nodes) == 3 and len(podman_nodes) == 3:
                break
            for name, process in zip(names, processes):
                if process.poll() is not None:
                    raise SystemExit(
                        f"demo: formd {name} exited ({process.returncode}); see demo-cluster/{name}/formd.log"
                    )
            if time.monotonic() > deadline:
                raise SystemExit(
                    "demo: the three nodes did not see each other within 60 s; see demo-cluster/*/formd.log"
                )
            time.sleep(0.5)
        say("Every node sees every other one: status, capabilities, free capacity, labels")
        form("a", "nodes")

        say("A Containerfile build, submitted on node a; the top-ranked capable node runs it")
        context = ROOT / "build-context"
        context.mkdir()
        (context / "Containerfile").write_text(
            f"FROM {BASE_IMAGE}\nRUN echo 'built by formnet' > /hello.txt\nRUN cat /hello.txt\n"
        )
        build_id = form("a", "submit", str(context), "--kind", "build").stdout.split()[0]
        say("Why that node: the ranked table node a computes for the build")
        form("a", "explain", build_id)
        say("Follow the build's log until it ends")
        form("a", "logs", build_id, "--follow")
        form("b", "status", build_id)

        say("A WASM job (a C program compiled to wasm32-wasi) that upper-cases an input file")
        wasm_dir = ROOT / "wasm-context"
        subprocess.run(
            ["bash", str(Path(__file__).resolve().parents[1] / "tests" / "wasm" / "build.sh"), str(wasm_dir)],
            check=True,
        )
        source = ROOT / "words.txt"
        source.write_text("peer to peer, no leader\n")
        wasm_id = form(
            "a",
            "submit",
            str(wasm_dir),
            "--kind",
            "wasm",
            "--module",
            "upcase.wasm",
            "--input",
            str(source),
            "--cmd",
            "words.txt",
            "--wait",
        ).stdout.split()[0]
        form("c", "status", wasm_id)
        say("Results fetched through node c, verified by blake3 on the way")
        form("c", "result", wasm_id, "-o", str(ROOT / "wasm-result"))
        for path in sorted((ROOT / "wasm-result").rglob("*")):
            if path.is_file() and path.stat().st_size < 4096 and not path.name.endswith(".tar"):
                print(f"{path.relative_to(ROOT)}: {path.read_text().strip()}")
        form("a", "result", build_id, "-o", str(ROOT / "build-result"))
        form("a", "jobs")
        say("Stopping the cluster: SIGTERM, each node leaves gracefully")
        return 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        stop_service(podman, ROOT / "podman")
        print("cluster stopped; state, logs and results are in ./demo-cluster/")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
