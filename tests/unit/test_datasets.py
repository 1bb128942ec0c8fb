"""Compute-to-data, the pure parts and the holder's files: dataset records and who may write
them, policies (image by name or id, algorithm, client), the placement filter and the failure
when every holder refuses, the output cap, and a dataset that changed on disk."""

import os
from dataclasses import replace

import pytest
from crdt_nodes import FakeNode
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scheduling_views import NODES, caps, cluster, view

from crdt_state.records import verify_entry
from crdt_state.signing import RecordError, seal_record
from daemon.jobs.dataset_store import DatasetStore
from pack_manager.datasets import (
    DatasetError,
    DatasetPolicy,
    DatasetRecord,
    dataset_reasons,
    normalise_image,
    output_cap,
    policy_refusal,
)
from pack_manager.jobspec import JobSpec, JobSpecError
from pack_manager.requirements import WorkloadRequirements
from pack_manager.scheduling import Claim, GiveUp, JobView, decide, job_status

A, B = FakeNode.create(11), FakeNode.create(12)
KNOWN = {A.node_id: A, B.node_id: B}
CONTEXT = "c" * 64
SUBMITTER = b"s" * 32


def record(holder=NODES[0], name="ward", **policy) -> DatasetRecord:
    return DatasetRecord(name, holder, "d" * 64, 100, 2, "", DatasetPolicy(**policy), 1)


def spec(datasets=("ward",), kind="run", image="localhost/formnet/busybox:latest", **extra) -> JobSpec:
    return JobSpec(
        kind=kind,
        submitter=SUBMITTER,
        nonce=os.urandom(16),
        context=CONTEXT,
        image=image if kind == "run" else None,
        module="m.wasm" if kind == "wasm" else None,
        requirements=WorkloadRequirements.from_human(executor="wasm" if kind == "wasm" else "podman"),
        datasets=datasets,
        **extra,
    )


def view_of(s: JobSpec, *records: DatasetRecord, runs=None) -> JobView:
    catalog: dict = {}
    for r in records:
        catalog.setdefault(r.name, {})[r.holder] = r
    return JobView(s.job_id(), s, runs or {}, False, datasets=catalog)


def test_a_dataset_record_round_trips_and_is_written_only_by_its_holder():
    mine = replace(record(A.node_id, allow_images=("busybox",), max_output_bytes=10), description="rows")
    envelope = seal_record(A.key, "dataset", mine.to_wire())
    entry = verify_entry("datasets", mine.key, envelope, KNOWN)
    assert DatasetRecord.from_wire(entry.body, mine.key) == mine
    with pytest.raises(RecordError, match="not the node it names"):
        verify_entry("datasets", f"ward:{B.hex}", envelope, KNOWN)
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(RecordError, match="unknown node"):
        verify_entry(
            "datasets", f"ward:{FakeNode(stranger, None).hex}", seal_record(stranger, "dataset", {}), KNOWN
        )
    for key in ("ward", f"../x:{A.hex}", f"ward:{A.hex[:10]}", f"{'n' * 65}:{A.hex}"):
        with pytest.raises(RecordError, match="form that map requires"):
            verify_entry("datasets", key, envelope, KNOWN)
    with pytest.raises(DatasetError, match="stored under"):
        DatasetRecord.from_wire(mine.to_wire(), f"other:{A.hex}")


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("digest", "xyz", "digest"),
        ("holder", b"short", "holder"),
        ("name", "has space", "dataset name"),
        ("allow_clients", ["not-a-node"], "allow_clients"),
        ("allow_algorithms", ["abc"], "allow_algorithms"),
        ("max_output", -1, "max_output"),
        ("removed", "yes", "removed"),
    ],
)
def test_bad_dataset_records_are_refused_with_the_field_named(field, value, reason):
    body = {**record().to_wire(), field: value}
    with pytest.raises(DatasetError, match=reason):
        DatasetRecord.from_wire(body)


def test_images_match_by_normalised_name_or_by_id():
    assert normalise_image("busybox") == normalise_image("docker.io/library/busybox:latest")
    assert normalise_image("localhost/formnet/busybox") == "formnet/busybox:latest"
    by_name = record(allow_images=("formnet/busybox",))
    assert policy_refusal(by_name, spec()) is None
    assert "image 'localhost/other:1' is not allowed" in policy_refusal(
        by_name, spec(image="localhost/other:1")
    )
    by_id = record(allow_images=("sha256:0123456789abcdef",))
    # Placement cannot tell which id a name stands for: the holder decides with its lookup.
    assert policy_refusal(by_id, spec()) is None
    assert policy_refusal(by_id, spec(), image_id="0123456789abcdef" + "0" * 48) is None
    assert "not allowed" in policy_refusal(by_id, spec(), image_id="f" * 64)
    assert policy_refusal(by_id, spec(image="0123456789abcdef")) is None
    assert "a wasm job runs none" in policy_refusal(record(allow_images=("busybox",)), spec(kind="wasm"))


def test_algorithms_and_clients_are_checked():
    assert policy_refusal(record(allow_algorithms=(CONTEXT,)), spec()) is None
    assert "algorithm cccccccccccc" in policy_refusal(record(allow_algorithms=("e" * 64,)), spec())
    assert policy_refusal(record(allow_clients=(SUBMITTER.hex(),)), spec()) is None
    assert f"client {SUBMITTER.hex()[:12]} is not allowed" in policy_refusal(
        record(allow_clients=("f" * 64,)), spec()
    )
    # A job submitted through the HTTPS API is its client key's, not its node's.
    key = "a" * 64
    assert policy_refusal(record(allow_clients=(key,)), spec(client=key)) is None
    assert "client aaaaaaaaaaaa is not allowed" in policy_refusal(
        record(allow_clients=(SUBMITTER.hex(),)), spec(client=key)
    )
    with pytest.raises(DatasetError, match="allow_clients"):
        DatasetPolicy(allow_clients=("me",))


def test_only_holders_of_every_dataset_can_run_the_job_whatever_the_ranking():
    s = spec(datasets=("ward", "labs"))
    j = view_of(s, record(NODES[2]), record(NODES[2], "labs"), record(NODES[0], "labs"))
    nodes = cluster()
    assert decide(j, nodes, NODES[2], view().capacity) == Claim(
        1, decide(j, nodes, NODES[2], view().capacity).reason
    )
    for other in NODES[:2]:
        assert decide(j, nodes, other, view().capacity) is None
    assert dataset_reasons(s, NODES[0], j.datasets) == (
        f"dataset ward: not held here (held by {NODES[2].hex()[:12]})",
    )
    assert dataset_reasons(s, NODES[1], j.datasets)[1].startswith("dataset labs: not held here")
    # No live holder: unschedulable, with the reason per node.
    gone = cluster(**{})
    gone[NODES[2]] = view(status="dead")
    status = job_status(j, gone)
    assert status.state == "unschedulable" and "dataset ward: not held here" in status.reason


def test_a_job_every_holder_refuses_fails_with_the_policy_reason_written_by_the_first_holder():
    s = spec()
    refusing = [record(NODES[1], allow_algorithms=("e" * 64,)), record(NODES[2], allow_clients=("f" * 64,))]
    j = view_of(s, *refusing)
    nodes = cluster()
    actions = {n: decide(j, nodes, n, view().capacity) for n in NODES}
    writers = [n for n, a in actions.items() if a is not None]
    assert len(writers) == 1 and isinstance(actions[writers[0]], GiveUp)
    reason = actions[writers[0]].reason
    assert "refused by dataset policy" in reason and "algorithm" in reason and "client" in reason
    # One holder that admits it is enough: it claims, the refusing one does nothing.
    j = view_of(s, refusing[0], record(NODES[2]))
    assert isinstance(decide(j, nodes, NODES[2], view().capacity), Claim)
    assert decide(j, nodes, NODES[1], view().capacity) is None
    # A holder that admits it but lacks the executor: not a policy failure, the job waits.
    nodes[NODES[2]] = view(caps(executors=("wasm",)))
    assert decide(j, nodes, NODES[1], view().capacity) is None
    assert job_status(j, nodes).state == "unschedulable"


def test_the_output_cap_is_the_smallest_of_the_jobs_datasets():
    s = spec(datasets=("ward", "labs", "open"))
    held = {
        "ward": record(max_output_bytes=4096),
        "labs": record(name="labs", max_output_bytes=1024),
        "open": record(name="open"),
    }
    assert output_cap(s, held) == (1024, "labs")
    assert output_cap(spec(datasets=("open",)), held) is None


def test_job_specs_name_datasets_by_valid_names_only():
    s = spec(datasets=("ward", "labs"))
    assert JobSpec.unpack(s.pack()) == s
    assert "datasets" not in spec(datasets=()).to_wire()  # specs without datasets keep their bytes
    for bad, reason in [(("ward", "ward"), "twice"), (("../x",), "not a dataset name"), (("a\n",), "name")]:
        with pytest.raises(JobSpecError, match=reason):
            spec(datasets=bad)
    with pytest.raises(JobSpecError, match="build job cannot read datasets"):
        JobSpec(
            kind="build",
            submitter=SUBMITTER,
            nonce=os.urandom(16),
            context=CONTEXT,
            datasets=("ward",),
        )


def test_a_dataset_is_hashed_in_place_and_a_change_on_disk_refuses_it(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.csv").write_bytes(b"1,2\n")
    (data / "sub" / "b.txt").write_bytes(b"note\n")
    store = DatasetStore(tmp_path / "state")
    manifest = store.scan("ward", data)
    store.save(manifest)
    assert [e.path for e in manifest.files] == ["a.csv", "sub/b.txt"] and manifest.size == 9
    assert DatasetStore(tmp_path / "state").get("ward") == manifest  # kept across restarts
    assert store.verify("ward") == data
    assert manifest.digest in store.protected() and manifest.files[0].digest in store.protected()
    os.utime(data / "a.csv", ns=(1, 1))  # touched, same bytes: hashed again, still fine
    assert store.verify("ward") == data
    (data / "a.csv").write_bytes(b"1,3\n")
    with pytest.raises(DatasetError, match="a.csv changed on disk"):
        store.verify("ward")
    (data / "a.csv").write_bytes(b"1,2\n")
    (data / "new.txt").write_bytes(b"x")
    with pytest.raises(DatasetError, match="new: \\['new.txt'\\]"):
        store.verify("ward")
    os.symlink("/etc/passwd", data / "link")
    with pytest.raises(DatasetError, match="not a regular file"):
        store.scan("other", data)
    with pytest.raises(DatasetError, match="absolute"):
        store.scan("other", "relative/path")
    with pytest.raises(DatasetError, match="dataset name"):
        store.scan("bad name", data)
    assert store.remove("ward") and store.get("ward") is None and store.protected() == frozenset()


def test_a_single_file_dataset_is_linked_into_a_directory_of_its_own(tmp_path):
    source = tmp_path / "scan.dcm"
    source.write_bytes(b"image bytes")
    store = DatasetStore(tmp_path / "state")
    manifest = store.scan("scan", source)
    store.save(manifest)
    mounted = store.verify("scan")
    assert [p.name for p in mounted.iterdir()] == ["scan.dcm"]
    assert mounted != source.parent  # its siblings are not exposed
    store.remove("scan")
    assert not mounted.exists() and source.read_bytes() == b"image bytes"
