"""`formd run`: wire identity, keyring, store, transport, metrics, node and control socket.

Start-up order matters for restarts: the store is opened (and locked) and replayed, then the
incarnation is bumped past everything we ever used (durably) before the first record goes out.

Signals: SIGTERM/SIGINT stop the jobs running here (recorded as yielded, so they move on;
their containers are removed), leave the cluster gracefully (our record says "left", pushed
to every known peer at once), snapshot the document and exit 0. SIGHUP re-reads the keyring file
(cluster.key), e.g. after an operator edited it by hand.
"""

from __future__ import annotations

import importlib.metadata
import random
import signal
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator

import trio

from crdt_state.document import ClusterDocument
from crdt_state.persistence import DocumentStore
from daemon.advertise import advertise_problem, is_local_address
from daemon.cluster.node import Node, NodeSettings
from daemon.config import FormdConfig
from daemon.control.acl_api import AclApi, grant_of
from daemon.control.api import DaemonApi
from daemon.control.dashboard import dashboard_pages
from daemon.control.http_api import HttpApi
from daemon.control.server import ControlServer
from daemon.identity import bump_incarnation, load_identity
from daemon.jobs.blobfetch import BlobFetcher, chunk_limit
from daemon.jobs.blobstore import BlobStore
from daemon.jobs.dataset_store import DatasetStore
from daemon.jobs.group_commit import file_syncer
from daemon.jobs.images import NodeImages
from daemon.jobs.loop import JobLoop
from daemon.jobs.peer_requests import LiveLogs, PeerRequests
from daemon.jobs.wakeup import Wakeup
from daemon.log import EventLog
from daemon.systemd import notify
from daemon.transport.keyring import Keyring, KeyringError
from daemon.transport.tcp import NetTransport
from metrics_agent.capacity import Reservation
from metrics_agent.collect import collect_capabilities, sample_capacity
from metrics_agent.executors_probe import probe_executors
from pack_manager.executors import cdi
from pack_manager.executors.base import ExecutorLimits
from pack_manager.executors.podman_leftovers import SWEEP_INTERVAL_S
from pack_manager.executors.staging import remove_tree

SNAPSHOT_LOG_BYTES = 32 * 1024 * 1024  # snapshot early when the log grows past this
# How long a stop waits for running jobs to end and be cleaned up: a container's stop grace
# and removal, or a build's stop (BUILD_STOP_WAIT_S); packaging/formd.service leaves room.
STOP_RUNS_TIMEOUT_S = 20.0


def version() -> str:
    try:
        return importlib.metadata.version("formnet")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def node_settings(config: FormdConfig) -> NodeSettings:
    return NodeSettings(
        gossip_interval=config.gossip_interval_ms / 1000,
        gossip_fanout=config.gossip_fanout,
        retransmit_mult=config.retransmit_mult,
        heartbeat_retransmit_mult=config.heartbeat_retransmit_mult,
        anti_entropy_interval=config.anti_entropy_interval_s,
        tick_interval=config.tick_interval_ms / 1000,
        suspect_mult=config.suspect_mult,
        dead_mult=config.dead_mult,
        probe_interval=config.probe_interval_ms / 1000,
        probe_timeout=config.probe_timeout_ms / 1000,
        indirect_probes=config.indirect_probes,
        refresh_rate=config.record_refresh_rate,
        request_timeout=config.request_timeout_ms / 1000,
        push_budget_bytes=min(1024 * 1024, config.max_frame_bytes // 2),
    )


def reload_keyring(keyring: Keyring, path: Path) -> None:
    """Make the live keyring equal the file's, through the ring's own checked operations."""
    wanted = Keyring.load(path)
    fresh = [k for k in wanted.key_ids() if k not in keyring]
    if fresh:
        raise KeyringError(f"{path} holds keys this formd does not; add new keys with `form cluster-key add`")
    keyring.use(wanted.primary_id)
    for key_id in keyring.key_ids():
        if key_id not in wanted:
            keyring.remove(key_id)


@asynccontextmanager
async def podman_url(state_dir: Path, config: FormdConfig, log: EventLog) -> AsyncIterator[str | None]:
    """The Podman API this node offers, via pack_manager.podman_service when it is there."""
    if "podman" not in config.executors:
        yield None
        return
    try:
        from pack_manager.podman_service import podman_service  # noqa: PLC0415 - optional part
    except ImportError:
        yield config.podman_url or None
        return
    try:
        async with podman_service(state_dir, config.podman_url or None) as url:
            yield url
    except Exception as exc:  # Podman trouble must not keep the node from gossiping
        log.warning("podman unavailable", reason=f"{type(exc).__name__}: {exc}")
        yield None


async def run_daemon(state_dir: Path, config: FormdConfig, log: EventLog) -> int:
    identity = load_identity(config.path(state_dir, config.node_key_file))
    keyring_path = config.path(state_dir, config.cluster_key_file)
    keyring = Keyring.load(keyring_path)
    store = DocumentStore(state_dir)
    try:
        return await _run(state_dir, config, log, identity, keyring, keyring_path, store)
    finally:
        store.close()


async def _run(state_dir, config, log, identity, keyring, keyring_path, store) -> int:
    if store.dropped_bytes:
        log.warning("document log had a torn tail", dropped_bytes=store.dropped_bytes)
    document = ClusterDocument.from_updates(store.load(), identity.node_id)
    for reason in document.ignored:
        log.warning("stored record ignored", reason=reason)
    held = document.get("nodes", identity.node_hex)
    incarnation = bump_incarnation(state_dir, at_least=held.node.incarnation if held and held.node else 0)

    problem = await trio.to_thread.run_sync(advertise_problem, config.advertise_address, is_local_address)
    if problem is not None:
        log.warning("advertised address is not local", addr=config.advertise_address, reason=problem)
    transport = NetTransport(
        keyring,
        config.listen,
        advertise=config.advertise_address,
        on_drop=lambda address, reason: log.warning("bad frame dropped", reason=reason, **{"from": address}),
        max_frame=config.max_frame_bytes,
    )
    # Podman is offered by _offer_podman once its executor exists (and has swept what an
    # earlier process left): offered sooner, a job placed here would find no executor.
    executors = await trio.to_thread.run_sync(
        lambda: tuple(
            e for e in probe_executors(config.podman_url or None) if e in config.executors and e != "podman"
        )
    )
    capabilities = await trio.to_thread.run_sync(collect_capabilities, state_dir, config.labels, executors)
    capabilities = replace(capabilities, region=config.region).with_named(config.named_capabilities)
    capabilities = await trio.to_thread.run_sync(offer_gpus, capabilities, config.cdi_spec_dirs, log)
    if config.http_listen:
        from daemon.control.tls import load_fingerprint  # noqa: PLC0415 - x509: only with the HTTPS API

        capabilities = replace(
            capabilities, http_api=config.http_address, tls_fingerprint=load_fingerprint(state_dir)
        )

    # Made first: the node and the job loop both hold them.
    blobs = BlobStore(state_dir / "blobs")
    datasets = DatasetStore(state_dir)
    live_logs = LiveLogs()
    wakeup = Wakeup()
    reservations: dict[str, Reservation] = {}

    def sample(current):
        return sample_capacity(state_dir, current, reservations.values())

    peer_requests = PeerRequests(
        blobs,
        live_logs,
        chunk_limit(config.max_frame_bytes),
        datasets,
        lambda digest: log.warning("dataset blob refused to a peer", digest=digest[:12]),
    )
    transport.serve_files(peer_requests.open_stream)
    node = Node(
        identity=identity,
        address=config.advertise_address,
        transport=transport,
        document=document,
        capabilities=capabilities,
        incarnation=incarnation,
        rng=random.Random(),
        settings=node_settings(config),
        seeds=config.seeds,
        sample_capacity=sample,
        store=store,
        bump_incarnation=lambda at_least: bump_incarnation(state_dir, at_least=at_least),
        log=log,
        version=version(),
        on_change=wakeup.set,
        side_handler=peer_requests.serve,
    )
    limits = ExecutorLimits(
        max_context_bytes=config.max_context_bytes, max_input_bytes=config.max_input_bytes
    )
    executors: dict = {}
    if "wasm" in capabilities.executors:
        from pack_manager.executors.wasm_executor import WasmExecutor  # noqa: PLC0415 - wasmtime is heavy

        executors["wasm"] = WasmExecutor(limits)
    await trio.to_thread.run_sync(remove_dead_work, state_dir / "work", log)
    fetcher = BlobFetcher(blobs, transport, node.settings.request_timeout * 5)
    pending_uploads: dict[str, float] = {}  # uploads no submit named yet: kept from collection
    podman = executors  # the podman executor appears here once _offer_podman finds Podman
    images = NodeImages(
        node,
        blobs,
        state_dir,
        lambda: getattr(podman.get("podman"), "url", None),
        fetcher.fetch,
        pending_uploads,
        auth_file=config.path(state_dir, config.registry_auth_file) if config.registry_auth_file else None,
        pull_timeout_s=config.registry_timeout_s,
        insecure_registries=config.insecure_registries,
        cache_bytes=config.image_cache_bytes,
    )
    peer_requests.offer_images(images)
    jobs = JobLoop(
        node,
        blobs,
        state_dir / "work",
        executors,
        policy=config.policy,
        limits=limits,
        sync_log=file_syncer(store.log_path),
        retention_s=config.job_retention_s,
        wakeup=wakeup,
        live_logs=live_logs,
        reservations=reservations,
        fetcher=fetcher,
        pending_uploads=pending_uploads,
        images=images,
        datasets=datasets,
    )
    jobs.configure_document()
    api = DaemonApi(node, keyring, keyring_path, state_dir, config, jobs=jobs)
    acl = AclApi(node, jobs.now_ms)
    methods = {**api.methods(), **acl.methods()}
    control = ControlServer(methods, log)

    async def metrics() -> bytes:
        from daemon.control.metrics import render_metrics  # noqa: PLC0415 - prometheus_client: on the first /metrics

        return await render_metrics(methods)

    http = HttpApi(
        methods,
        lambda key: grant_of(node, key),
        log,
        metrics=metrics,
        metrics_allow=config.metrics_allow,
        token_caller=acl.token_caller,
        pages=dashboard_pages(),
    )
    socket_path = config.path(state_dir, config.socket)

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await nursery.start(control.serve, socket_path, config.socket_permissions, config.socket_gid)
            if config.http_listen:
                from daemon.control.http_server import serve_http  # noqa: PLC0415 - hypercorn: only a node serving HTTPS

                await nursery.start(serve_http, http, config.http_listen, state_dir)
            await nursery.start(jobs.run)
            nursery.start_soon(_snapshots, store, document, config.snapshot_interval_s)
            nursery.start_soon(_offer_podman, state_dir, config, node, log, executors, limits)
            log.info(
                "formd started",
                id=identity.node_hex,
                addr=config.advertise_address,
                incarnation=incarnation,
                socket=str(socket_path),
                known_nodes=len(document.node_records()),
            )
            notify("READY=1")
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        reload_keyring(keyring, keyring_path)
                        log.notice("keyring reloaded", primary=keyring.primary_id.hex())
                    except KeyringError as exc:
                        log.warning("keyring reload refused", reason=str(exc))
                    continue
                log.info("stopping", signal=signal.Signals(signum).name)
                notify("STOPPING=1")
                # Runs here end first, recorded as yielded so their jobs move on; each
                # executor removes what it started (containers, work areas) on its way out.
                await jobs.stop_all("formd stopped on this node", STOP_RUNS_TIMEOUT_S)
                await node.leave()
                nursery.cancel_scope.cancel()
                break
    store.snapshot(document.full_state())
    log.info("formd stopped", id=identity.node_hex)
    return 0


async def _snapshots(store: DocumentStore, document: ClusterDocument, interval: float) -> None:
    since = 0.0
    while True:
        await trio.sleep(5.0)
        since += 5.0
        if since >= interval or store.log_bytes > SNAPSHOT_LOG_BYTES:
            store.snapshot(document.full_state())
            since = 0.0


def offer_gpus(capabilities, spec_dirs, log: EventLog):
    """The GPUs with the CDI device that brings each into a container; said once when some
    have none (they are reported, but no job is given them)."""
    names = cdi.device_names(spec_dirs)
    gpus = tuple(replace(g, cdi_device=cdi.gpu_device(g.index, g.uuid, names)) for g in capabilities.gpus)
    hidden = [str(g.index) for g in gpus if not g.cdi_device]
    if hidden:
        log.warning(
            "GPUs not offered to jobs",
            gpus=",".join(hidden),
            reason=f"no CDI spec for {cdi.GPU_KIND} names them in {', '.join(spec_dirs)} "
            "(nvidia-ctk cdi generate writes one)",
        )
    return replace(capabilities, gpus=gpus)


async def _offer_podman(
    state_dir: Path, config: FormdConfig, node: Node, log: EventLog, executors: dict, limits: ExecutorLimits
) -> None:
    """Start (or find) Podman in the background and advertise it once it answers."""
    if "podman" not in config.executors:
        return
    async with podman_url(state_dir, config, log) as url:
        if url is None:
            return
        offered = tuple(
            e for e in await trio.to_thread.run_sync(probe_executors, url) if e in config.executors
        )
        podman = None
        if "podman" in offered:
            from pack_manager.executors.podman_executor import PodmanExecutor  # noqa: PLC0415

            podman = executors["podman"] = PodmanExecutor(url, limits, node.identity.node_hex)
            await _sweep_podman(podman, log)
        if offered != node.capabilities.executors:
            node.capabilities = replace(node.capabilities, executors=offered)
            node.publish()
            log.info("executors", offered=",".join(offered) or "-", podman=url)
        if podman is None:
            await trio.sleep_forever()
        while True:  # at start, then now and then: what an earlier formd of this node left
            await trio.sleep(SWEEP_INTERVAL_S)
            await _sweep_podman(podman, log)


async def _sweep_podman(podman, log: EventLog) -> None:
    try:
        removed = await trio.to_thread.run_sync(podman.sweep)
    except Exception as exc:  # Podman trouble: the next sweep tries again
        log.warning("podman leftovers not swept", reason=f"{type(exc).__name__}: {exc}"[:300])
        return
    for line in removed:
        log.notice("podman leftover removed", what=line)


def remove_dead_work(work_dir: Path, log: EventLog) -> None:
    """Staged work areas and logs of runs that died with an earlier formd (none runs yet)."""
    if not work_dir.is_dir():
        return
    for entry in sorted(work_dir.iterdir()):
        if entry.is_dir():
            remove_tree(entry)
        else:
            entry.unlink(missing_ok=True)
        log.notice("dead run's work removed", path=str(entry))
