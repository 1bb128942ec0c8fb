"""The Podman executor against real Podman (API service started for this module), building
FROM the local busybox base image. After each test nothing of ours may be left: no
container (also build containers), no job image, no work area."""

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import blake3
import pytest
import trio
from executor_blobs import Blobs

from pack_manager.base_image import BASE_IMAGE
from pack_manager.executors import (
    CANCELLED,
    FAILED,
    IMAGE_ARCHIVE,
    OUTPUTS_TAR,
    SUCCEEDED,
    TIMED_OUT,
    run_job,
)
from pack_manager.executors.base import ExecutorLimits
from pack_manager.executors.cgroups import cgroup_dirs, limit_pids, remove_cgroup
from pack_manager.executors.netns import create_empty_netns, delete_netns, netns_names
from pack_manager.executors.podman_executor import PodmanExecutor
from pack_manager.executors.podman_options import BUILD_CAPABILITIES, build_cgroup_prefix, job_tag
from pack_manager.jobspec import JobInput, JobSpec
from pack_manager.podman_service import ping, podman_service
from pack_manager.requirements import WorkloadRequirements

pytestmark = pytest.mark.podman


def podman_json(*args):
    return json.loads(
        subprocess.run(
            ["podman", *args, "--format", "json"], check=True, capture_output=True, text=True
        ).stdout
        or "[]"
    )


def leftovers():
    # Names and tags go with the ids so that a failure says whose they are: this check is
    # host-wide, and another test run on the same host at the same time also shows up.
    containers = {
        c["Id"]: (c.get("Names"), c.get("Image"), c.get("Labels"))
        for c in podman_json("ps", "-a", "--external")
    }
    images = {i["Id"]: i.get("Names") for i in podman_json("images", "-a")}
    return containers, images


@pytest.fixture
def clean_check(podman_url):
    before = leftovers()
    yield
    containers, images = leftovers()
    new_containers = {key: value for key, value in containers.items() if key not in before[0]}
    new_images = {key: value for key, value in images.items() if key not in before[1]}
    assert new_containers == {}, "containers left behind"
    assert new_images == {}, "images left behind"


def context_tar(files: dict) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def execute(url, tmp_path, spec, blobs, cancel=None, on_line=None, limits=None):
    lines = []

    async def log(line):
        lines.append(line)
        if on_line is not None:
            on_line(line)

    work = tmp_path / "work"
    result = await run_job(
        PodmanExecutor(url, limits),
        spec,
        work,
        tmp_path / "result",
        blobs.path,
        log,
        cancel if cancel is not None else trio.Event(),
    )
    assert not work.exists(), "the work area must be removed"
    return result, lines


def run_spec(command, **changes):
    fields = dict(
        kind="run",
        submitter=bytes(32),
        nonce=blake3.blake3(repr(command).encode()).digest()[:16],
        image=BASE_IMAGE,
        command=tuple(command),
        timeout_ms=30_000,
    )
    fields.update(changes)
    return JobSpec(**fields)


def outputs_of(result):
    [tarball] = [item for item in result.outputs if item.name == OUTPUTS_TAR]
    assert blake3.blake3(tarball.path.read_bytes()).hexdigest() == tarball.digest
    with tarfile.open(tarball.path) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


async def test_build_streams_logs_then_the_image_runs_what_the_build_wrote(podman_url, tmp_path, clean_check):
    blobs = Blobs(tmp_path / "blobs")
    context = context_tar(
        {
            "Containerfile": (
                f"FROM {BASE_IMAGE}\n"
                "RUN echo step-one && sleep 1 && echo step-two\n"
                "RUN echo built-by-formnet > /greeting\n"
                'CMD ["/bin/cat", "/greeting"]\n'
            )
        }
    )
    spec = JobSpec(
        kind="build", submitter=bytes(32), nonce=b"b" * 16, context=blobs.put(context), keep_image=True
    )
    build_done = False
    seen_while_building = []

    def on_line(line):
        if line.startswith("step-"):
            seen_while_building.append((line, build_done))

    try:
        result, lines = await execute(podman_url, tmp_path / "build", spec, blobs, on_line=on_line)
        build_done = True
        assert result.state == SUCCEEDED, (result.reason, lines)
        assert seen_while_building == [("step-one", False), ("step-two", False)]
        assert result.image_id and len(result.image_id) == 64

        run = run_spec([], image=job_tag(spec))
        ran, run_lines = await execute(podman_url, tmp_path / "run", run, blobs)
        assert ran.state == SUCCEEDED, ran.reason
        assert run_lines == ["built-by-formnet"]
    finally:
        subprocess.run(["podman", "rmi", "-f", job_tag(spec)], capture_output=True)


async def test_build_without_keep_saves_an_oci_archive_and_removes_the_image(
    podman_url, tmp_path, clean_check
):
    blobs = Blobs(tmp_path / "blobs")
    context = context_tar({"Build.file": f"FROM {BASE_IMAGE}\nRUN echo hi > /hi\n"})
    spec = JobSpec(
        kind="build",
        submitter=bytes(32),
        nonce=b"c" * 16,
        context=blobs.put(context),
        containerfile="Build.file",
    )
    result, _ = await execute(podman_url, tmp_path, spec, blobs)
    assert result.state == SUCCEEDED, result.reason
    [archive] = result.outputs
    assert archive.name == IMAGE_ARCHIVE
    assert blake3.blake3(archive.path.read_bytes()).hexdigest() == archive.digest
    with tarfile.open(archive.path) as oci:
        names = set(oci.getnames())
    assert {"oci-layout", "index.json"} <= names
    assert subprocess.run(["podman", "image", "exists", job_tag(spec)]).returncode == 1


async def test_failing_build_reports_the_error(podman_url, tmp_path, clean_check):
    blobs = Blobs(tmp_path / "blobs")
    context = context_tar({"Containerfile": f"FROM {BASE_IMAGE}\nRUN exit 7\n"})
    spec = JobSpec(kind="build", submitter=bytes(32), nonce=b"d" * 16, context=blobs.put(context))
    result, _ = await execute(podman_url, tmp_path, spec, blobs)
    assert result.state == FAILED
    assert "build failed" in result.reason and "exit status 7" in result.reason


async def test_cancelling_a_build_stops_its_running_step(podman_url, tmp_path, clean_check):
    blobs = Blobs(tmp_path / "blobs")
    context = context_tar({"Containerfile": f"FROM {BASE_IMAGE}\nRUN echo sleeping && sleep 300\n"})
    spec = JobSpec(kind="build", submitter=bytes(32), nonce=b"e" * 16, context=blobs.put(context))
    cancel = trio.Event()
    result, _ = await execute(
        podman_url,
        tmp_path,
        spec,
        blobs,
        cancel=cancel,
        on_line=lambda line: line == "sleeping" and cancel.set(),
    )
    assert result.state == CANCELLED
    assert list(Path("/sys/fs/cgroup/memory").glob("formnet-build-*")) == []


async def test_build_context_breaking_the_rules_is_rejected_before_anything_runs(
    podman_url, tmp_path, clean_check
):
    blobs = Blobs(tmp_path / "blobs")
    context = context_tar({"Containerfile": f"FROM {BASE_IMAGE}\n", "../escape": "x"})
    spec = JobSpec(kind="build", submitter=bytes(32), nonce=b"f" * 16, context=blobs.put(context))
    result, lines = await execute(podman_url, tmp_path, spec, blobs)
    assert result.state == FAILED and result.reason.startswith("rejected before running: context:")
    assert lines == []


async def test_inputs_are_read_only_and_outputs_come_back(podman_url, tmp_path, clean_check):
    blobs = Blobs(tmp_path / "blobs")
    spec = run_spec(
        [
            "sh",
            "-c",
            "id -u; touch /data/inputs/x 2>/dev/null && echo writable || echo read-only; "
            "tr a-z A-Z < /data/inputs/words.txt > /data/outputs/WORDS.txt; mkdir /data/outputs/sub; "
            "echo nested > /data/outputs/sub/n.txt",
        ],
        inputs=(JobInput("words.txt", blobs.put(b"hello inputs\n")),),
    )
    result, lines = await execute(podman_url, tmp_path, spec, blobs)
    assert result.state == SUCCEEDED, (result.reason, lines)
    assert lines == ["65534", "read-only"]
    assert outputs_of(result) == {"WORDS.txt": b"HELLO INPUTS\n", "sub/n.txt": b"nested\n"}


async def test_memory_limit_kills_an_allocation_past_it_as_out_of_memory(podman_url, tmp_path, clean_check):
    blobs = Blobs(tmp_path / "blobs")
    spec = run_spec(
        ["sh", "-c", "x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived"],
        requirements=WorkloadRequirements.from_human(memory="64MiB"),
    )
    result, lines = await execute(podman_url, tmp_path, spec, blobs)
    assert result.state == FAILED
    assert "survived" not in lines
    assert result.reason.startswith("out of memory"), result.reason
    assert "64.0 MiB" in result.reason


async def test_network_is_off_unless_asked(podman_url, tmp_path, clean_check):
    blobs = Blobs(tmp_path / "blobs")
    spec = run_spec(["sh", "-c", "ls /sys/class/net; echo x | nc -w 2 10.88.0.1 9"])
    result, lines = await execute(podman_url, tmp_path, spec, blobs)
    assert result.state == FAILED
    assert lines[0] == "lo" and "eth0" not in lines
    assert any("unreachable" in line.lower() for line in lines), lines


async def test_timeout_kills_the_container(podman_url, tmp_path, clean_check):
    blobs = Blobs(tmp_path / "blobs")
    spec = run_spec(["sleep", "300"], timeout_ms=1500)
    result, _ = await execute(podman_url, tmp_path, spec, blobs)
    assert result.state == TIMED_OUT
    assert "timed out after 1.5 s" in result.reason


async def test_cancel_stops_a_sleeping_container(podman_url, tmp_path, clean_check):
    blobs = Blobs(tmp_path / "blobs")
    cancel = trio.Event()
    spec = run_spec(["sh", "-c", "echo ready; exec sleep 300"])
    result, _ = await execute(
        podman_url,
        tmp_path,
        spec,
        blobs,
        cancel=cancel,
        on_line=lambda line: line == "ready" and cancel.set(),
    )
    assert result.state == CANCELLED


async def test_missing_image_is_a_clear_failure(podman_url, tmp_path, clean_check):
    blobs = Blobs(tmp_path / "blobs")
    result, _ = await execute(
        podman_url, tmp_path, run_spec(["true"], image="localhost/formnet/nope:latest"), blobs
    )
    assert result.state == FAILED
    assert "not on this node" in result.reason


async def test_exit_code_is_reported(podman_url, tmp_path, clean_check):
    blobs = Blobs(tmp_path / "blobs")
    result, lines = await execute(
        podman_url, tmp_path, run_spec(["sh", "-c", "echo out; echo err >&2; exit 4"]), blobs
    )
    assert result.state == FAILED and result.exit_code == 4
    assert sorted(lines) == ["err", "out"]


async def test_podman_service_starts_and_stops_its_own(tmp_path):
    async with podman_service(tmp_path, None) as url:
        assert url == f"unix://{tmp_path}/podman.sock"
        assert await trio.to_thread.run_sync(ping, url)
    assert not (tmp_path / "podman.sock").exists()
    assert not (tmp_path / "podman-service.pid").exists()


async def test_podman_service_with_a_dead_configured_url_is_none(tmp_path):
    async with podman_service(tmp_path, f"unix://{tmp_path}/nothing.sock") as url:
        assert url is None


async def test_exit_code_of_a_command_that_closes_its_output_early(podman_url, tmp_path, clean_check):
    # The output stream ends long before the exit: the executor must still wait for the
    # real exit and report its code.
    blobs = Blobs(tmp_path / "blobs")
    spec = run_spec(
        ["sh", "-c", "echo bye; exec >&- 2>&-; sleep 2; echo late > /data/outputs/late.txt; exit 5"]
    )
    result, lines = await execute(podman_url, tmp_path, spec, blobs)
    assert lines == ["bye"]
    assert result.state == FAILED and result.exit_code == 5, result.reason
    assert outputs_of(result) == {"late.txt": b"late\n"}


# What every job gets, read from inside: effective capabilities, no_new_privs, open files,
# processes, memory limit (cgroup v1 or v2), network interfaces.
ISOLATION_PROBE = (
    "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; echo nofile=$(ulimit -n); "
    "echo memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null); "
    "echo net=$(ls /sys/class/net | tr '\\n' ' '); "
    # Start more processes than the pids limit allows, then count them with builtins only.
    "(for i in $(seq 60); do sleep 3 & done) 2>/dev/null; set -- /proc/[0-9]*; echo procs=$#"
)
PIDS_LIMIT = 30
MEMORY = 256 * 1024**2


def isolation_seen(lines) -> dict:
    seen = {}
    for line in lines:
        key, sep, value = line.replace(":", "=", 1).partition("=")
        if sep and key.strip() in ("CapEff", "NoNewPrivs", "nofile", "memory", "net", "procs"):
            seen[key.strip()] = value.strip()
    return seen


def check_isolation(seen: dict, capabilities: int) -> None:
    assert int(seen["CapEff"], 16) == capabilities, seen
    assert seen["NoNewPrivs"] == "1", seen
    assert seen["nofile"] == "1024", seen
    assert int(seen["memory"]) == MEMORY, seen
    assert seen["net"] == "lo", seen
    assert int(seen["procs"]) <= PIDS_LIMIT, seen


async def test_a_run_job_has_no_capabilities_no_new_privileges_and_every_limit(
    podman_url, tmp_path, clean_check
):
    blobs = Blobs(tmp_path / "blobs")
    spec = run_spec(
        ["sh", "-c", ISOLATION_PROBE],
        requirements=WorkloadRequirements(memory_bytes=MEMORY, executor="podman"),
    )
    result, lines = await execute(
        podman_url, tmp_path, spec, blobs, limits=ExecutorLimits(pids_limit=PIDS_LIMIT)
    )
    assert result.state == SUCCEEDED, (result.reason, lines)
    check_isolation(isolation_seen(lines), 0)


async def test_a_build_runs_its_steps_with_few_capabilities_no_new_privileges_and_every_limit(
    podman_url, tmp_path, clean_check
):
    blobs = Blobs(tmp_path / "blobs")
    context = context_tar({"Containerfile": f"FROM {BASE_IMAGE}\nRUN {ISOLATION_PROBE}\n"})
    spec = JobSpec(
        kind="build",
        submitter=bytes(32),
        nonce=os.urandom(16),
        context=blobs.put(context),
        requirements=WorkloadRequirements(memory_bytes=MEMORY, executor="podman"),
    )
    result, lines = await execute(
        podman_url, tmp_path, spec, blobs, limits=ExecutorLimits(pids_limit=PIDS_LIMIT)
    )
    assert result.state == SUCCEEDED, (result.reason, lines)
    wanted = sum(1 << CAPABILITY_BITS[name] for name in BUILD_CAPABILITIES)
    check_isolation(isolation_seen(lines), wanted)


CAPABILITY_BITS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
}


def test_a_sweep_removes_what_this_node_left_and_nothing_of_another_node(podman_url, clean_check):
    me, other = os.urandom(32).hex(), os.urandom(32).hex()
    left = f"/{build_cgroup_prefix(me)}{os.urandom(8).hex()}-dead"
    others = f"/{build_cgroup_prefix(other)}{os.urandom(8).hex()}-live"
    name = f"formnet-leftover-{os.urandom(3).hex()}"
    subprocess.run(
        ["podman", "create", "--name", name, "--label", f"formnet.node={me}", "--label", "formnet.job=x",
         BASE_IMAGE, "sleep", "60"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        assert limit_pids(left, 10) and limit_pids(others, 10)
        create_empty_netns(left.strip("/"))
        removed = PodmanExecutor(podman_url, node_hex=me).sweep()
        expected = (
            f"container {name} ",
            f"build cgroup {left} ",
            f"build network namespace {left.strip('/')}",
        )
        assert len(removed) == 3 and all(any(line.startswith(e) for line in removed) for e in expected), (
            removed
        )
        assert cgroup_dirs(left) == [] and left.strip("/") not in netns_names(build_cgroup_prefix(me))
        assert cgroup_dirs(others) != []  # another node's build is not ours to touch
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)
        remove_cgroup(left)
        remove_cgroup(others)
        delete_netns(left.strip("/"))
