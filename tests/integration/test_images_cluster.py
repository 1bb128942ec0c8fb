"""Images reach the node that runs the job: real formd processes, each with a Podman service
and an image store of its own (as on separate hosts), on 127.0.0.1.

An image only node A holds runs on node B (fetched over the sealed transport and loaded); a
build --tag'ged on A runs on B; a build on B FROM an image only A holds gets it first; a holder
that lies or serves a corrupt archive changes nothing on B and the job fails with that reason;
a registry nobody listens on makes every node decline and the job fails with all their reasons;
the image cache evicts formd's own images only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Iterator

import pytest
from procs import Cluster, all_see, free_port, wait_until
from procs import job_status as status

from daemon.jobs.blobstore import BlobStore
from metrics_agent.images import short_id
from pack_manager.base_image import BASE_IMAGE, ensure_base_image
from pack_manager.executors import podman_images
from simulations.netns.podman_store import PodmanStore

pytestmark = [pytest.mark.slow, pytest.mark.podman]


@contextlib.contextmanager
def podman_store(root: Path) -> Iterator[str]:
    """A Podman API service over a store of its own under root (simulations/netns/podman_store.py,
    outside any namespace here); no container may be left in it when the test ends; the store
    is removed after."""
    store = PodmanStore(root / "store", [], Path("/run") / f"formnet-img-{os.urandom(4).hex()}")
    try:
        url = store.start()
        ensure_base_image(url)
        yield url
        assert store.containers() == [], "containers left in the store"
    finally:
        store.close()


def podman_settings(url: str, **extra: str) -> dict[str, str]:
    return {"executors": '["wasm", "podman"]', "podman_url": json.dumps(url), **extra}


def store_images(url: str) -> dict[str, tuple[str, ...]]:
    with podman_images.client(url) as podman:
        return podman_images.ids_and_names(podman)


def tag_base(url: str, name: str) -> str:
    """A new name for the node's base image; its full id."""
    with podman_images.client(url) as podman:
        image = podman.images.get(BASE_IMAGE)
        podman_images.tag(podman, image.id, name)
        return image.id


def import_image(url: str, name: str, text: str) -> str:
    """A one-file image made with podman import (an id no other image has); its full id."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("note.txt")
        body = text.encode()
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
    with podman_images.client(url) as podman:
        response = podman.api.post(
            "/images/import",
            params={"reference": name},
            data=buffer.getvalue(),
            headers={"Content-Type": "application/x-tar"},
        )
        assert response.status_code < 400, response.text
        return podman.images.get(name).id


def submit(node, context: Path, *args: str) -> dict:
    """`form submit CONTEXT ARGS --wait` on node; the job's final status."""
    job_id = node.form("submit", str(context), *args, "--wait", check=False).stdout.splitlines()[0]
    return status(node, job_id)


def published_holders(node, image_id: str) -> set[str]:
    for image in json.loads(node.form("images", "--json").stdout):
        if image_id.removeprefix("sha256:").startswith(image["id"]):
            return {h["id"] for h in image["holders"]}
    return set()


def published_names(node) -> set[str]:
    return {name for image in json.loads(node.form("images", "--json").stdout) for name in image["names"]}


def two_hosts(cluster: Cluster, url_a: str, url_b: str, **settings: str):
    a = cluster.add("a", labels=["host=a"], settings=podman_settings(url_a, **settings))
    b = cluster.add("b", seed=a, labels=["host=b"], settings=podman_settings(url_b, **settings))
    wait_until(lambda: all_see((a, b), [a.node_id, b.node_id]), 30, "the cluster to be up")
    wait_until(lambda: all("podman" in n["executors"] for n in a.nodes()), 30, "both nodes to offer podman")
    return a, b


def test_an_image_only_one_node_holds_runs_on_another_and_so_do_a_build_tagged_there_and_a_build_from_it(
    tmp_path,
):
    suffix = os.urandom(4).hex()
    name = f"localhost/i13img-held-{suffix}:1"
    with podman_store(tmp_path / "pa") as url_a, podman_store(tmp_path / "pb") as url_b:
        held_id = tag_base(url_a, name)
        assert podman_images.local_id(podman_images.client(url_b), name) is None
        with Cluster(tmp_path / "nodes") as cluster:
            a, b = two_hosts(cluster, url_a, url_b)
            wait_until(lambda: published_holders(b, held_id) == {a.node_id}, 30, "a to publish its image")
            context = tmp_path / "context"
            context.mkdir()
            (context / "x.txt").write_text("x\n")
            seen = submit(
                a,
                context,
                "--kind",
                "run",
                "--image",
                f"i13img-held-{suffix}:1",
                "--label",
                "host=b",
                "--cmd",
                "sh -c 'echo ran here'",
            )
            assert seen["state"] == "succeeded", seen
            assert seen["node"] == b.node_id
            assert "ran here" in a.form("logs", seen["id"]).stdout
            assert store_images(url_b).get(held_id) == (name,)  # the very image, under its name
            wait_until(
                lambda: published_holders(a, held_id) == {a.node_id, b.node_id}, 30, "b to publish it too"
            )

            # A build kept under --tag on a runs on b, which fetches it from a.
            (context / "Containerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo built-on-a > /built.txt\n")
            tagged = f"i13img-built-{suffix}:2"
            built = submit(a, context, "--kind", "build", "--tag", tagged, "--label", "host=a")
            assert built["state"] == "succeeded", built
            assert f"kept as {tagged}" in built["reason"]
            assert any(f"localhost/{tagged}" in names for names in store_images(url_a).values())
            ran = submit(
                a, context, "--kind", "run", "--image", tagged, "--label", "host=b", "--cmd", "cat /built.txt"
            )
            assert ran["state"] == "succeeded", ran
            assert "built-on-a" in a.form("logs", ran["id"]).stdout
            table = a.form("images").stdout
            assert f"localhost/{tagged}" in table and a.node_id[:12] in table

            # A build on b FROM an image only a holds under that name: b gets it before building.
            base = f"localhost/i13img-base-{suffix}:3"
            tag_base(url_a, base)
            wait_until(lambda: base in published_names(b), 30, "a to publish the base image's new name")
            (context / "Containerfile").write_text(f"FROM i13img-base-{suffix}:3 AS first\nFROM first\n")
            from_held = submit(b, context, "--kind", "build", "--label", "host=b")
            assert from_held["state"] == "succeeded", from_held
            assert from_held["node"] == b.node_id
            assert any(base in names for names in store_images(url_b).values())


def test_a_holder_that_lies_or_serves_a_corrupt_archive_changes_nothing_and_the_job_fails_saying_so(tmp_path):
    suffix = os.urandom(4).hex()
    liar_name, corrupt_name = f"localhost/i13img-lie-{suffix}:1", f"localhost/i13img-bad-{suffix}:1"
    with podman_store(tmp_path / "pa") as url_a, podman_store(tmp_path / "pb") as url_b:
        lie_id = import_image(url_a, liar_name, "the advertised image")
        other_id = import_image(url_a, f"localhost/i13img-other-{suffix}:1", "another image")
        corrupt_id = import_image(url_a, corrupt_name, "an image whose archive breaks")
        with Cluster(tmp_path / "nodes") as cluster:
            a = cluster.add("a", labels=["host=a"], settings=podman_settings(url_a), start=False)
            # a's export record points at the wrong archive (another image's) and at garbage.
            blobs = BlobStore(a.state_dir / "blobs")
            with podman_images.client(url_a) as podman:
                other_archive = blobs.put_chunks(podman_images.save_chunks(podman, other_id))
            garbage = blobs.put_bytes(os.urandom(4096))
            exports = {short_id(lie_id): other_archive, short_id(corrupt_id): garbage}
            (a.state_dir / "images.json").write_text(json.dumps({"exports": exports}))
            a.start()
            b = cluster.add("b", seed=a, labels=["host=b"], settings=podman_settings(url_b))
            wait_until(lambda: all_see((a, b), [a.node_id, b.node_id]), 30, "the cluster to be up")
            wait_until(lambda: published_holders(b, corrupt_id) == {a.node_id}, 30, "a to publish its images")
            before = store_images(url_b)
            context = tmp_path / "context"
            context.mkdir()
            for image, expected in (
                (
                    liar_name,
                    f"the archive does not hold image {short_id(lie_id)[:12]} (it holds {short_id(other_id)[:12]})",
                ),
                (corrupt_name, "the archive does not load"),
            ):
                seen = submit(
                    a, context, "--kind", "run", "--image", image, "--label", "host=b", "--cmd", "true"
                )
                assert seen["state"] == "failed", seen
                assert "no node could get the job's image or inputs" in seen["reason"]
                assert f"from node {a.node_id[:12]}: {expected}" in seen["reason"], seen["reason"]
                assert store_images(url_b) == before  # nothing loaded stays, no name moved
            assert b.running() and a.running()


def test_an_unreachable_registry_or_an_unknown_image_makes_every_node_decline_and_the_job_fail_with_each_reason(
    tmp_path,
):
    registry = f"127.0.0.1:{free_port()}"  # nothing listens there
    image = f"{registry}/i13img/absent-{os.urandom(4).hex()}:1"
    with podman_store(tmp_path / "p") as url:
        before = store_images(url)
        with Cluster(tmp_path / "nodes") as cluster:
            first = cluster.add("n0", settings=podman_settings(url))
            nodes = [first] + [
                cluster.add(f"n{i}", seed=first, settings=podman_settings(url)) for i in (1, 2)
            ]
            ids = [n.node_id for n in nodes]
            wait_until(lambda: all_see(nodes, ids), 30, "the cluster to be up")
            wait_until(
                lambda: all("podman" in n["executors"] for n in first.nodes()), 30, "podman everywhere"
            )
            context = tmp_path / "context"
            context.mkdir()
            seen = submit(first, context, "--kind", "run", "--image", image, "--cmd", "true")
            assert seen["state"] == "failed", seen
            assert seen["reason"].startswith("no node could get the job's image or inputs: ")
            for node_id in ids:
                assert f"node {node_id[:12]}: image {image}: registry unreachable: " in seen["reason"], seen
            explained = json.loads(first.form("explain", seen["id"], "--json").stdout)
            declines = [n for n in explained["nodes"] if n["run"] == "declined"]
            assert len(declines) == 2 and all(
                n["run_unable"] for n in declines
            )  # the first wrote the failure

            # An image nobody has, and no registry may be asked: every node says so.
            unknown = f"i13img-unknown-{os.urandom(4).hex()}:1"
            seen = submit(
                first, context, "--kind", "run", "--image", unknown, "--pull", "never", "--cmd", "true"
            )
            assert seen["state"] == "failed", seen
            for node_id in ids:
                assert (
                    f"node {node_id[:12]}: image docker.io/library/{unknown}: "
                    "no node holds it; not pulled (--pull never)" in seen["reason"]
                ), seen["reason"]
        assert store_images(url) == before


def test_the_image_cache_evicts_formds_own_images_least_recently_used_first_never_the_operators(tmp_path):
    suffix = os.urandom(4).hex()
    with podman_store(tmp_path / "p") as url:
        operator = f"localhost/i13img-operator-{suffix}:1"
        operator_id = import_image(url, operator, "the operator's own image")
        with podman_images.client(url) as podman:
            base_size = podman_images.image_size(podman, BASE_IMAGE)
        budget = str(int(base_size * 1.5))  # room for one built image, not two
        with Cluster(tmp_path / "nodes") as cluster:
            a = cluster.add("a", settings=podman_settings(url, image_cache_bytes=budget))
            wait_until(lambda: "podman" in a.nodes()[0]["executors"], 30, "podman offered")
            context = tmp_path / "context"
            context.mkdir()
            built = []
            for n in (1, 2):
                (context / "Containerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo {n} > /n.txt\n")
                tagged = f"i13img-cache-{suffix}-{n}:1"
                assert submit(a, context, "--kind", "build", "--tag", tagged)["state"] == "succeeded"
                built.append(f"localhost/{tagged}")
            names = {n for names in store_images(url).values() for n in names}
            assert built[0] not in names, "the least recently used build stays over budget"
            assert built[1] in names
            assert operator in names and BASE_IMAGE in names
            cache = json.loads((a.state_dir / "images.json").read_text())["cached"]
            assert len(cache) == 1 and operator_id not in cache


@contextlib.contextmanager
def local_registry(root: Path, user: str, password: str) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1 (plain HTTP, htpasswd auth, storage under root)."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (packaging/setup-host.sh installs it)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # noqa: PLC0415 - bcrypt for htpasswd (glibc's libxcrypt); gone in 3.13
        except ImportError:
            pytest.skip("no crypt module to write a bcrypt htpasswd entry")

    root.mkdir(parents=True, exist_ok=True)
    (root / "htpasswd").write_text(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    address = f"127.0.0.1:{free_port()}"
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: {address}\n"
        f"auth:\n  htpasswd:\n    realm: formnet-test\n    path: {root / 'htpasswd'}\n"
    )
    with open(root / "registry.log", "wb") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log
        )
    try:
        wait_until(lambda: _answers(address), 20, "the registry to listen")
        yield address
    finally:
        process.terminate()
        process.wait(10)


def _answers(address: str) -> bool:
    import socket  # noqa: PLC0415

    host, port = address.rsplit(":", 1)
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


def push(url: str, name: str, auth: dict[str, str]) -> None:
    from podman import api as podman_api  # noqa: PLC0415

    with podman_images.client(url) as podman:
        response = podman.api.post(
            f"/images/{name}/push",
            params={"destination": name, "tlsVerify": False},
            headers={"X-Registry-Auth": podman_api.encode_auth_header(auth)},
        )
        assert response.status_code < 400 and '"error"' not in response.text, response.text


def test_a_node_pulls_from_a_registry_with_the_credentials_of_its_auth_file_and_one_without_declines(
    tmp_path,
):
    import base64  # noqa: PLC0415

    user, password = "robot", os.urandom(8).hex()
    with (
        local_registry(tmp_path / "registry", user, password) as registry,
        podman_store(tmp_path / "pa") as url_a,
        podman_store(tmp_path / "pb") as url_b,
    ):
        name = f"{registry}/i13img/pulled-{os.urandom(4).hex()}:1"
        image_id = tag_base(url_a, name)
        push(url_a, name, {"username": user, "password": password})
        with podman_images.client(url_a) as podman:
            podman_images.untag_quietly(podman, image_id, name)  # only the registry has it by name now
        auth = tmp_path / "auth.json"
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        auth.write_text(json.dumps({"auths": {registry: {"auth": token}}}))
        insecure = json.dumps([registry])
        with Cluster(tmp_path / "nodes") as cluster:
            a = cluster.add(
                "a", labels=["host=a"], settings=podman_settings(url_a, insecure_registries=insecure)
            )
            b = cluster.add(
                "b",
                seed=a,
                labels=["host=b"],
                settings=podman_settings(
                    url_b, insecure_registries=insecure, registry_auth_file=json.dumps(str(auth))
                ),
            )
            wait_until(lambda: all_see((a, b), [a.node_id, b.node_id]), 30, "the cluster to be up")
            wait_until(lambda: all("podman" in n["executors"] for n in a.nodes()), 30, "podman on both")
            context = tmp_path / "context"
            context.mkdir()

            def run(host: str, *extra: str) -> dict:
                return submit(
                    a, context, "--kind", "run", "--image", name, "--label", f"host={host}", "--cmd", "cat /etc/passwd",
                    *extra,
                )  # fmt: skip

            refused = run("a")  # a has no credentials
            assert refused["state"] == "failed"
            assert f"image {name}: the registry refused access: " in refused["reason"], refused["reason"]
            assert "unauthorized" in refused["reason"]
            assert all(name not in names for names in store_images(url_a).values())
            pulled = run("b")
            assert pulled["state"] == "succeeded", pulled["reason"]
            assert "root:x:0:0" in a.form("logs", pulled["id"]).stdout
            assert store_images(url_b)[image_id] == (name,)
            again = run("b", "--pull", "always")  # pulled again, same image
            assert again["state"] == "succeeded", again["reason"]


def test_a_registry_that_never_answers_is_given_up_after_the_pull_timeout(tmp_path):
    import socket  # noqa: PLC0415

    from pack_manager.executors.podman_images import ImageError  # noqa: PLC0415

    with socket.socket() as silent, podman_store(tmp_path / "p") as url:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections are taken by the kernel and never answered
        name = f"127.0.0.1:{silent.getsockname()[1]}/i13img/silent:1"
        with (
            podman_images.client(url) as podman,
            pytest.raises(ImageError, match="registry timed out after 2 s"),
        ):
            podman_images.pull(podman, name, None, 2, tls_verify=False)
