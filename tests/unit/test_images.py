"""Images, the pure parts: what a node record publishes (bounded), how a job's reference
matches it, the cache's eviction order, declines for good and the failure they end in, and
image holders counted by --prefer-local-inputs."""

from __future__ import annotations

import os

import msgpack
import pytest

from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import NodeCapacity, apply_reservations
from metrics_agent.images import (
    ID_CHARS,
    MAX_IMAGES,
    PUBLISH_BUDGET,
    HeldImage,
    images_from_wire,
    publishable,
)
from metrics_agent.wire import WireError
from pack_manager import scheduling
from pack_manager.image_cache import CachedImage, evictions
from pack_manager.image_refs import full_names, matches, registry_name
from pack_manager.jobspec import JobSpec, JobSpecError
from pack_manager.jobstate import DECLINED, FAILED, RunReport, advance
from pack_manager.requirements import WorkloadRequirements


def image(names: tuple[str, ...], size: int = 1000) -> HeldImage:
    return HeldImage(os.urandom(32).hex(), size, names)


def caps(images: tuple[HeldImage, ...] = ()) -> NodeCapabilities:
    return NodeCapabilities(
        cpu_model="cpu", logical_cores=4, physical_cores=4, cpu_millicores=4000, memory_bytes=8 << 30,
        disk_bytes=100 << 30, arch="x86_64", os="linux", kernel="6", executors=("podman",), images=images,
    )  # fmt: skip


# ---- publishing -------------------------------------------------------------------------------


def test_published_images_are_cut_to_the_id_prefix_and_fit_the_record_budget():
    many = [
        image((f"localhost/tool-{i:03d}:latest", f"docker.io/library/tool-{i:03d}:1"), i) for i in range(100)
    ]
    published = publishable(many)
    assert 0 < len(published) <= MAX_IMAGES
    assert len(msgpack.packb([p.to_wire() for p in published])) <= PUBLISH_BUDGET
    assert published[0].id == many[0].id[:ID_CHARS] and published[0].names == many[0].names
    assert [p.names for p in published] == [m.names for m in many[: len(published)]]  # in the order given


def test_capabilities_carry_images_only_when_there_are_some_and_refuse_bad_ones():
    assert "images" not in caps().to_wire()
    held = publishable([image(("localhost/a:1",))])
    assert NodeCapabilities.from_wire(caps(held).to_wire()).images == held
    for bad in ([["xyz", 1, []]], [[held[0].id, -1, []]], [[held[0].id, 1, ["a"] * 9]], "nope"):
        with pytest.raises(WireError):
            images_from_wire(bad)


# ---- references -------------------------------------------------------------------------------


def test_a_reference_matches_the_names_podman_stores_and_id_prefixes():
    built = HeldImage("ab" * 12, 1, ("localhost/tool:1",))
    hub = HeldImage("cd" * 12, 1, ("docker.io/library/busybox:latest",))
    assert matches("tool:1", built) and matches("localhost/tool:1", built)
    assert not matches("tool:2", built) and not matches("tool", built)
    assert matches("busybox", hub) and matches("docker.io/library/busybox:latest", hub)
    assert matches("abababababab", built) and not matches("abababababac", built)
    assert full_names("registry.example:5000/a/b") == ("registry.example:5000/a/b:latest",)


def test_only_names_a_registry_can_have_are_pulled():
    assert registry_name("busybox") == "docker.io/library/busybox:latest"
    assert registry_name("user/x:2") == "docker.io/user/x:2"
    assert registry_name("127.0.0.1:5/a/b:1") == "127.0.0.1:5/a/b:1"
    assert registry_name("localhost/tool:1") is None
    assert registry_name("0123456789abcdef") is None  # an id


def test_registry_credentials_come_from_a_podman_auth_file(tmp_path):
    import base64

    from pack_manager.executors.podman_images import ImageError, registry_auth

    auth = tmp_path / "auth.json"
    token = base64.b64encode(b"robot:s3cret:x").decode()
    auth.write_text('{"auths": {"registry.example:5000": {"auth": "%s"}}}' % token)
    assert registry_auth(auth, "registry.example:5000/team/tool:1") == {
        "username": "robot",
        "password": "s3cret:x",
    }
    assert registry_auth(auth, "docker.io/library/busybox:latest") is None
    assert registry_auth(None, "registry.example:5000/a:1") is None
    auth.write_text("not json")
    with pytest.raises(ImageError, match="registry_auth_file"):
        registry_auth(auth, "registry.example:5000/a:1")


# ---- the cache --------------------------------------------------------------------------------


def test_the_cache_removes_least_recently_used_first_and_never_one_in_use():
    cached = {"old": CachedImage(1, 40), "mid": CachedImage(2, 40), "new": CachedImage(3, 40)}
    assert evictions(cached, 120) == []
    assert evictions(cached, 80) == ["old"]
    assert evictions(cached, 50) == ["old", "mid"]
    assert evictions(cached, 50, in_use={"old"}) == ["mid", "new"]
    assert evictions(cached, 0, in_use={"old", "mid", "new"}) == []


# ---- specs and run records --------------------------------------------------------------------


def spec(**changes) -> JobSpec:
    fields = dict(kind="run", submitter=b"s" * 32, nonce=b"n" * 16, image="tool:1", command=("true",))
    fields.update(changes)
    return JobSpec(**fields)


def test_pull_and_tag_travel_in_the_spec_and_are_checked():
    assert JobSpec.unpack(spec(pull="never").pack()).pull == "never"
    assert "pull" not in spec().to_wire()  # the default keeps the bytes (and ids) specs had
    build = spec(kind="build", image=None, command=(), context="0" * 64, tag="tool:2")
    assert JobSpec.unpack(build.pack()).tag == "tool:2"
    for bad in (
        dict(pull="sometimes"),
        dict(tag="tool:1"),
        dict(kind="build", image=None, context="0" * 64, tag="Bad Name"),
    ):
        with pytest.raises(JobSpecError):
            spec(**bad)


def test_a_claim_can_end_in_a_decline_for_good_and_a_later_claim_clears_it():
    running = advance(None, "running", attempt=1)
    unable = advance(running, DECLINED, reason="image x: registry unreachable", unable=True)
    assert RunReport.from_wire(unable.to_wire()).unable
    assert "unable" not in running.to_wire()
    assert not advance(unable, "claimed").unable


# ---- scheduling -------------------------------------------------------------------------------

A, B, C = (bytes([i]) * 32 for i in (1, 2, 3))


def job(runs: dict, **spec_changes) -> scheduling.JobView:
    made = spec(requirements=WorkloadRequirements(executor="podman"), **spec_changes)
    return scheduling.JobView(made.job_id(), made, runs)


def views(images: dict[bytes, tuple[HeldImage, ...]] | None = None) -> dict[bytes, scheduling.NodeView]:
    images = images or {}
    return {n: scheduling.NodeView(caps(images.get(n, ())), None, "alive") for n in (A, B, C)}


def unable(reason: str) -> RunReport:
    return RunReport(DECLINED, 1, reason, unable=True)


def test_a_node_that_declined_for_good_is_passed_over_and_not_asked_again():
    nodes = views()
    order = scheduling.order_nodes(job({}), nodes)
    first, second = order[0], order[1]
    view = job({first: unable("image tool:1: no node holds it")})
    c = caps()
    fresh = apply_reservations(c, NodeCapacity(c.cpu_millicores, c.memory_bytes, c.disk_bytes), ())
    assert isinstance(scheduling.decide(view, nodes, second, fresh, order=order), scheduling.Claim)
    assert scheduling.decide(view, nodes, first, None, order=order) is None


def test_when_every_capable_node_is_unable_the_first_of_them_fails_the_job_with_every_reason():
    nodes = views()
    order = scheduling.order_nodes(job({}), nodes)
    runs = {n: unable(f"reason of {n.hex()[:4]}") for n in order}
    view = job(runs)
    actions = {n: scheduling.decide(view, nodes, n, None, order=order) for n in order}
    assert actions[order[1]] is None and actions[order[2]] is None
    give_up = actions[order[0]]
    assert isinstance(give_up, scheduling.GiveUp)
    assert give_up.reason.startswith("no node could get the job's image or inputs: ")
    assert all(f"node {n.hex()[:12]}: reason of {n.hex()[:4]}" in give_up.reason for n in order)
    assert advance(runs[order[0]], FAILED, attempt=1, reason=give_up.reason).state == FAILED


def test_prefer_local_inputs_ranks_the_nodes_holding_the_image_first():
    plain = views()
    last = scheduling.order_nodes(job({}, prefer_local_inputs=True), plain)[-1]
    held = views({last: (HeldImage("ab" * 12, 1, ("localhost/tool:1",)),)})
    assert scheduling.order_nodes(job({}, prefer_local_inputs=True), held)[0] == last
    assert scheduling.order_nodes(job({}), held)[-1] == last  # only when the job asks
