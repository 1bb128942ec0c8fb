"""The Podman executor: `build` a context into an image, `run` a command in an image.

podman-py is blocking, so every call goes through trio.to_thread; a job's deadline and
its cancel event are enforced on the trio side, and the container (or the build's
processes) are then killed from here. Whatever happens, the container is removed and a
build leaves no image behind unless the job asked to keep it.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import replace
from typing import Any, Callable

import trio
from podman import PodmanClient
from podman import api as podman_api
from podman.errors import APIError, ImageNotFound, NotFound, PodmanError
from requests.exceptions import RequestException

from metrics_agent.units import format_bytes

from ..context_archive import ArchiveError, file_digest
from ..jobspec import JobSpec
from . import podman_images, podman_leftovers, podman_options
from .base import (
    CANCELLED,
    FAILED,
    IMAGE_ARCHIVE,
    SUCCEEDED,
    TIMED_OUT,
    ExecutionResult,
    ExecutorLimits,
    LineSplitter,
    LogSink,
    OutputFile,
    WorkArea,
)
from .cgroups import OomWatch, kill_cgroup, limit_pids, remove_cgroup
from .netns import NetnsError, create_empty_netns, delete_netns
from .outputs import collect_outputs
from .supervise import supervise
from .thread_lines import ThreadLines

_CLIENT_ERRORS = (PodmanError, RequestException, OSError)
BUILD_STOP_WAIT_S = 15.0


class PodmanExecutor:
    name = "podman"

    def __init__(self, url: str, limits: ExecutorLimits | None = None, node_hex: str = "") -> None:
        self.url = url
        self.limits = limits or ExecutorLimits()
        self.node_hex = node_hex  # labels every container and names every build cgroup
        # What this process's runs hold now (container names, build cgroup parents): a name is
        # added before the thing is made and dropped once it is gone, so a sweep never
        # removes a run's own.
        self.owned: set[str] = set()
        self.owned_builds: set[str] = set()

    def sweep(self) -> list[str]:
        """Blocking: remove what this node's earlier processes left in Podman (see
        podman_leftovers); one line per thing removed."""
        with self._client() as client:
            return podman_leftovers.sweep(client, self.node_hex, self.owned, self.owned_builds)

    async def execute(
        self, spec: JobSpec, work: WorkArea, log: LogSink, cancel: trio.Event
    ) -> ExecutionResult:
        started = time.monotonic()
        try:
            if spec.kind == "run":
                result = await self._run(spec, work, log, cancel)
            elif spec.kind == "build":
                result = await self._build(spec, work, log, cancel)
            else:
                result = ExecutionResult(FAILED, f"the podman executor does not run {spec.kind} jobs")
        except _CLIENT_ERRORS as exc:
            result = ExecutionResult(FAILED, f"podman: {_explain(exc)}")
        return replace(result, duration_s=time.monotonic() - started)

    def _client(self) -> PodmanClient:
        return PodmanClient(base_url=self.url, timeout=60)

    # ---- run ---------------------------------------------------------------------------

    async def _run(self, spec: JobSpec, work: WorkArea, log: LogSink, cancel: trio.Event) -> ExecutionResult:
        job = _RunHandles(self.owned)
        try:
            # One thread hop for the whole launch: on a loaded host every hop is a wake-up
            # that can cost milliseconds. Nothing can be cancelled half-way anyway; the
            # handles are recorded as they are made, so cleanup below finds them.
            try:
                await trio.to_thread.run_sync(self._launch, spec, work, job)
            except _NoImage:
                return ExecutionResult(
                    FAILED,
                    f"image {spec.image!r} is not on this node",
                )
            container, attached, watch = job.container, job.attached, job.watch
            assert container is not None and watch is not None

            final_state: list[dict[str, Any]] = []

            async def run_to_exit() -> None:
                await self._pump(lambda send: self._read_stream(attached, send), log)
                final_state.append(
                    await trio.to_thread.run_sync(_exit_state, container, abandon_on_cancel=True)
                )

            outcome = await supervise(run_to_exit, spec.timeout_s, cancel)
            if outcome == CANCELLED:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(
                        lambda: container.stop(timeout=max(1, int(self.limits.stop_grace_s)))
                    )
                return ExecutionResult(CANCELLED, "cancelled: the container was stopped")
            if outcome == TIMED_OUT:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(lambda: _kill_quietly(container))
                return ExecutionResult(
                    TIMED_OUT, f"timed out after {spec.timeout_s:g} s: the container was killed"
                )

            state = final_state[0]
            code = int(state.get("ExitCode", -1))
            oom = bool(state.get("OOMKilled")) or watch.poll()
            oom_known = watch.armed  # read before release() closes the watch

            async def release() -> None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(job.release)

            # The command has exited: removal and packing the outputs (a bind-mounted host
            # dir the container no longer touches) overlap.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(release)
                return await self._run_result(spec, work, code, oom, oom_known)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(job.release)

    def _launch(self, spec: JobSpec, work: WorkArea, job: "_RunHandles") -> None:
        """Blocking: look the image up, create, attach, arm the OOM watch, start."""
        # One client (one connection pool) for the whole job: the attach stream holds one
        # connection, the control calls reuse another.
        client = job.client = self._client()
        try:
            image = client.images.get(spec.image)
        except (ImageNotFound, NotFound):
            raise _NoImage from None
        user = podman_options.choose_user(image.attrs.get("Config", {}).get("User"), self.limits)
        name = job.name = f"formnet-{spec.job_id().hex()[:12]}-{secrets.token_hex(3)}"
        self.owned.add(name)
        container = job.container = _create(
            client, podman_options.run_options(spec, work, self.limits, user, name, self.node_hex)
        )
        # Attaching to a created container initialises it (runc create: cgroup and
        # process exist, the command has not run), so the OOM watch is armed before the
        # job can allocate anything, without a separate init call.
        job.attached = self._attach(client, container.id)
        job.watch = OomWatch(_initialised_pid(container))
        container.start()

    async def _run_result(
        self, spec: JobSpec, work: WorkArea, code: int, oom: bool, oom_known: bool
    ) -> ExecutionResult:
        memory = spec.requirements.memory_bytes
        if code != 0:
            if oom:
                reason = (
                    f"out of memory: killed at the {format_bytes(memory)} memory limit (exit code {code})"
                )
            elif code == 137 and memory and not oom_known:
                reason = (
                    "killed by SIGKILL (exit code 137); most likely out of memory at the "
                    f"{format_bytes(memory)} limit"
                )
            else:
                reason = f"the command exited with code {code}"
            return ExecutionResult(
                FAILED, reason, exit_code=code, outputs=await collect_outputs(work, self.limits, strict=False)
            )
        try:
            outputs = await collect_outputs(work, self.limits, strict=True)
        except ArchiveError as exc:
            return ExecutionResult(FAILED, f"outputs refused: {exc}", exit_code=code)
        note = " (a process inside was OOM-killed along the way)" if oom else ""
        return ExecutionResult(SUCCEEDED, f"exited with code 0{note}", exit_code=0, outputs=outputs)

    def _attach(self, client: PodmanClient, container_id: str) -> Any:
        """Attach before start: output then streams live and the stream ends at exit (the
        logs endpoint with follow polls the log file and lags by a quarter second)."""
        response = client.api.post(
            f"/containers/{container_id}/attach",
            params={"stream": True, "stdout": True, "stderr": True, "logs": True},
            stream=True,
        )
        response.raise_for_status()
        return response

    def _read_stream(self, response: Any, send: Callable[[str], None]) -> None:
        splitter = LineSplitter(self.limits.max_log_line)
        for chunk in podman_api.stream_frames(response):
            for line in splitter.feed(chunk):
                send(line)
        for line in splitter.flush():
            send(line)

    async def _pump(self, reader: Callable[[Callable[[str], None]], Any], log: LogSink) -> Any:
        """Run a blocking reader in a thread, delivering its lines to the log sink in order."""
        lines = ThreadLines()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lines.deliver, log)
            try:
                return await trio.to_thread.run_sync(reader, lines.send, abandon_on_cancel=True)
            finally:
                lines.close()

    # ---- build -------------------------------------------------------------------------

    async def _build(
        self, spec: JobSpec, work: WorkArea, log: LogSink, cancel: trio.Event
    ) -> ExecutionResult:
        assert work.context_tar is not None  # staging guarantees it for builds
        tag = podman_options.job_tag(spec)
        cgroup_parent = podman_options.build_cgroup_parent(spec, self.node_hex, secrets.token_hex(4))
        self.owned_builds.add(cgroup_parent)
        await trio.to_thread.run_sync(limit_pids, cgroup_parent, self.limits.pids_limit)
        netns_name = cgroup_parent.strip("/")
        try:
            netns = None if spec.network else await trio.to_thread.run_sync(create_empty_netns, netns_name)
        except NetnsError as exc:
            await trio.to_thread.run_sync(remove_cgroup, cgroup_parent)
            self.owned_builds.discard(cgroup_parent)
            return ExecutionResult(FAILED, str(exc))
        params = podman_options.build_params(spec, tag, cgroup_parent, self.node_hex, self.limits, netns)
        responses: list[Any] = []
        errors: list[str] = []
        finished = trio.Event()
        lines = ThreadLines()

        async def build_thread() -> None:
            # Not abandoned on cancel: it returns when Podman ends the build stream, which is
            # how we know the build (and its own cleanup) is over.
            try:
                await trio.to_thread.run_sync(self._stream_build, params, work, lines.send, responses, errors)
            except _CLIENT_ERRORS as exc:
                errors.append(_explain(exc))
            finally:
                finished.set()
                lines.close()

        client = await trio.to_thread.run_sync(self._client)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(build_thread)
                nursery.start_soon(lines.deliver, log)
                try:
                    outcome = await supervise(finished.wait, spec.timeout_s, cancel)
                finally:
                    if not finished.is_set():
                        with trio.CancelScope(shield=True):
                            await self._stop_build(cgroup_parent, finished, responses)
            if outcome != SUCCEEDED:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_remove_image_quietly, client, tag)
                if outcome == CANCELLED:
                    return ExecutionResult(CANCELLED, "cancelled: the build was stopped")
                return ExecutionResult(
                    TIMED_OUT, f"timed out after {spec.timeout_s:g} s: the build was stopped"
                )
            if errors:
                await trio.to_thread.run_sync(_remove_image_quietly, client, tag)
                return ExecutionResult(FAILED, f"build failed: {errors[-1].strip()}")
            try:
                image = await trio.to_thread.run_sync(client.images.get, tag)
            except (ImageNotFound, NotFound):
                return ExecutionResult(FAILED, "build failed: Podman reported no error but produced no image")
            if spec.keep_image:
                return ExecutionResult(
                    SUCCEEDED, f"built {tag} (kept on this node)", exit_code=0, image_id=image.id
                )
            if spec.tag:  # kept under the user's name; the job's own name goes below
                await trio.to_thread.run_sync(podman_images.tag, client, image.id, spec.tag)
            try:
                archive = await self._save_image(client, image.id, work)
            finally:
                with trio.CancelScope(shield=True):
                    if spec.tag:
                        await trio.to_thread.run_sync(podman_images.untag_quietly, client, image.id, tag)
                    else:
                        await trio.to_thread.run_sync(_remove_image_quietly, client, tag)
            kept = f" and kept as {spec.tag}" if spec.tag else ""
            return ExecutionResult(
                SUCCEEDED,
                f"built; image saved as an OCI archive{kept}",
                exit_code=0,
                outputs=(archive,),
                image_id=image.id,
            )
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(remove_cgroup, cgroup_parent)
                await trio.to_thread.run_sync(delete_netns, netns_name)
                self.owned_builds.discard(cgroup_parent)
                await trio.to_thread.run_sync(client.close)

    def _stream_build(
        self,
        params: dict[str, Any],
        work: WorkArea,
        send: Callable[[str], None],
        responses: list[Any],
        errors: list[str],
    ) -> None:
        client = self._client()
        try:
            with open(work.context_tar, "rb") as body:  # type: ignore[arg-type]
                response = client.api.post(
                    "/build",
                    params=params,
                    data=body,
                    headers={"Content-type": "application/x-tar"},
                    stream=True,
                )
                responses.append(response)
                if response.status_code >= 400:
                    errors.append(_api_message(response))
                    return
                splitter = LineSplitter(self.limits.max_log_line)
                for raw in response.iter_lines():
                    if not raw:
                        continue
                    try:
                        item = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(item, dict) and isinstance(item.get("stream"), str):
                        for line in splitter.feed(item["stream"].encode()):
                            send(line)
                    if isinstance(item, dict) and item.get("error"):
                        errors.append(str(item["error"]))
                        send(f"error: {item['error']}".rstrip())
                for line in splitter.flush():
                    send(line)
        finally:
            client.close()

    async def _stop_build(self, cgroup_parent: str, finished: trio.Event, responses: list[Any]) -> None:
        # Kill what runs in the build's cgroup until Podman gives up on the build and ends the
        # stream (it then removes its working container itself). A build between steps has
        # no processes; the next step's are killed as soon as they appear.
        deadline = trio.current_time() + BUILD_STOP_WAIT_S
        while not finished.is_set() and trio.current_time() < deadline:
            await trio.to_thread.run_sync(kill_cgroup, cgroup_parent)
            with trio.move_on_after(0.1):
                await finished.wait()
        if not finished.is_set() and responses:
            await trio.to_thread.run_sync(responses[0].close)
            await finished.wait()

    async def _save_image(self, client: PodmanClient, image_id: str, work: WorkArea) -> OutputFile:
        target = work.result_dir / IMAGE_ARCHIVE

        def save() -> None:
            response = client.api.get(
                f"/images/{image_id}/get", params={"format": "oci-archive"}, stream=True
            )
            response.raise_for_status()
            with open(target, "wb") as handle:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    handle.write(chunk)

        await trio.to_thread.run_sync(save)
        digest = await trio.to_thread.run_sync(file_digest, target)
        return OutputFile(IMAGE_ARCHIVE, digest, target.stat().st_size, target)


class _NoImage(Exception):
    pass


class _RunHandles:
    """What one run job holds in Podman and on the host; release() frees all of it, once."""

    def __init__(self, owned: set[str]) -> None:
        self.owned = owned  # the executor's: the name leaves it once the container is gone
        self.name = ""
        self.client: PodmanClient | None = None
        self.container: Any = None
        self.attached: Any = None
        self.watch: OomWatch | None = None
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self.container is not None:
                _remove_quietly(self.container)
                self.container = None
            self.owned.discard(self.name)
            if self.watch is not None:
                self.watch.close()
                self.watch = None
            if self.attached is not None:
                self.attached.close()
                self.attached = None
            if self.client is not None:
                self.client.close()
                self.client = None


def _create(client: PodmanClient, options: dict[str, Any]) -> Any:
    """containers.create without its trailing inspect (a round trip whose answer we never
    read): the same payload rendering and error mapping, then a model holding just the id.
    Also passes `volatile`, a libpod create field podman-py's create does not know."""
    options = dict(options)
    volatile = bool(options.pop("volatile", False))
    payload = {"image": options.pop("image"), "command": options.pop("command", None), **options}
    rendered = client.containers._render_payload(payload)
    if volatile:
        rendered["volatile"] = True
    body = podman_api.prepare_body(rendered)
    response = client.api.post("/containers/create", headers={"content-type": "application/json"}, data=body)
    response.raise_for_status(not_found=ImageNotFound)
    return client.containers.prepare_model({"Id": response.json()["Id"]})


def _initialised_pid(container: Any) -> int:
    """The pid of the container's (not yet started) init process, initialising it first if
    attaching did not; 0 when Podman reports none (the OOM watch is then not armed)."""
    state = container.inspect().get("State", {})
    if not state.get("Pid") and state.get("Status") == "configured":
        container.init()
        state = container.inspect().get("State", {})
    return int(state.get("Pid") or 0)


EXIT_POLL_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


def _exit_state(container: Any) -> dict[str, Any]:
    """State (ExitCode, OOMKilled) of a container whose output stream has ended.

    The stream ends when the command exits; conmon records the exit code a moment later.
    Inspect reads that record, so a few quick inspects get the code as soon as it exists.
    The wait endpoint answers only once the state is "exited", which conmon's cleanup
    process (a whole podman start) sets, and it polls every 250 ms: it returned 120-260 ms
    after the exit here, even with a 10 ms interval. If the command is still running (it
    closed its own stdout and stderr), fall back to the blocking wait.
    """
    for pause in (0.0, *EXIT_POLL_S):
        time.sleep(pause)
        state = container.inspect().get("State", {})
        if state.get("Status") in ("stopped", "exited"):
            return state
    code = container.wait()
    state = container.inspect().get("State", {})
    state.setdefault("ExitCode", code)
    return state


def _kill_quietly(container: Any) -> None:
    try:
        container.kill(signal="SIGKILL")
    except _CLIENT_ERRORS:
        pass  # already gone; removal below is what matters


def _remove_quietly(container: Any) -> None:
    try:
        container.remove(force=True, v=True)
    except (NotFound, ImageNotFound):
        pass
    except _CLIENT_ERRORS:
        # One retry after a kill: a container that is still stopping refuses removal.
        _kill_quietly(container)
        try:
            container.remove(force=True, v=True)
        except _CLIENT_ERRORS:
            pass


def _remove_image_quietly(client: PodmanClient, reference: str) -> None:
    try:
        client.images.remove(reference, force=True)
    except _CLIENT_ERRORS:
        pass


def _api_message(response: Any) -> str:
    try:
        body = response.json()
        return str(body.get("message") or body.get("cause") or body)
    except ValueError:
        return response.text[:500]


def _explain(exc: BaseException) -> str:
    if isinstance(exc, APIError):
        return str(getattr(exc, "explanation", None) or exc)
    return f"{type(exc).__name__}: {exc}"
