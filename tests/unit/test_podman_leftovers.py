"""Which containers a sweep removes: this node's, and only those no run of ours holds."""

from pack_manager.executors.podman_leftovers import stray_containers
from pack_manager.executors.podman_options import build_cgroup_parent, build_cgroup_prefix
from pack_manager.jobspec import JobSpec


def listed(name: str, node: str | None, job: str = "j" * 64) -> dict:
    labels = {"formnet.job": job} if node is None else {"formnet.job": job, "formnet.node": node}
    return {"Names": [name], "Labels": labels, "State": "running"}


def test_only_this_nodes_containers_that_no_run_holds_are_strays():
    me, other = "a" * 64, "b" * 64
    containers = [
        listed("formnet-held", me),
        listed("formnet-left", me),
        listed("formnet-other-node", other),
        listed("formnet-unlabelled", None),
        {"Names": ["/formnet-slash"], "Labels": {"formnet.node": me}},
        {"Names": None, "Labels": None},
    ]
    strays = stray_containers(containers, me, {"formnet-held", "formnet-slash"})
    assert [c["Names"][0] for c in strays] == ["formnet-left"]


def test_build_cgroups_are_named_after_the_node_so_a_sweep_finds_only_its_own():
    spec = JobSpec(kind="build", submitter=bytes(32), nonce=bytes(16), context="0" * 64)
    parent = build_cgroup_parent(spec, "c" * 64, "t0k3n")
    assert parent.startswith("/" + build_cgroup_prefix("c" * 64))
    assert not parent.startswith("/" + build_cgroup_prefix("d" * 64))
