"""check_fit: "can never fit" (capabilities) apart from "cannot fit now" (capacity), one reason each."""

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from metrics_agent.capabilities import GpuInfo, NodeCapabilities
from metrics_agent.capacity import GpuUsage, NodeCapacity, Reservation, apply_reservations
from metrics_agent.units import GIB, MIB
from pack_manager.fit import check_fit, free_matching_gpus, preference_score
from pack_manager.requirements import WorkloadRequirements


def node(memory=8 * GIB, gpus=(), executors=("podman", "wasm"), labels=None):
    return NodeCapabilities(
        cpu_model="x",
        logical_cores=4,
        physical_cores=4,
        cpu_millicores=4000,
        memory_bytes=memory,
        disk_bytes=100 * GIB,
        arch="x86_64",
        os="Debian",
        kernel="6.1",
        gpus=tuple(gpus),
        executors=executors,
        labels=labels or {"zone": "a"},
    )


def free(caps, memory=None, reservations=(), gpu_free=None):
    observed = NodeCapacity(
        cpu_millicores_idle=caps.cpu_millicores,
        memory_available_bytes=caps.memory_bytes if memory is None else memory,
        disk_free_bytes=caps.disk_bytes,
        gpus=tuple(GpuUsage(g.index, g.memory_bytes if gpu_free is None else gpu_free, 0) for g in caps.gpus),
    )
    return apply_reservations(caps, observed, reservations)


def req(**kwargs):
    return WorkloadRequirements.from_human(**kwargs)


def test_fits():
    caps = node()
    verdict = check_fit(caps, free(caps), req(cpu="2", memory="4GiB"))
    assert verdict.fits_ever and verdict.fits_now and verdict.reasons == ()


def test_memory_now_reason_matches_the_documented_form():
    caps = node()
    verdict = check_fit(caps, free(caps, memory=3 * GIB // 2), req(memory="4GiB"))
    assert verdict.fits_ever and not verdict.fits_now
    assert verdict.not_now == ("memory: needs 4.0 GiB, 1.5 GiB available of 8.0 GiB",)


def test_never_fits_is_separate_from_not_now():
    caps = node()
    verdict = check_fit(caps, free(caps, memory=0), req(memory="64GiB"))
    assert not verdict.fits_ever and not verdict.fits_now
    assert verdict.never == ("memory: needs 64.0 GiB, node has 8.0 GiB",)
    assert verdict.not_now == ()  # capacity is not even looked at for a non-candidate


def test_one_reason_per_failed_resource():
    caps = node(executors=("podman",))
    verdict = check_fit(
        caps,
        free(caps),
        req(cpu="8", memory="9GiB", disk="1PiB", executor="wasm", labels=["zone=b", "ssd=yes"]),
    )
    assert verdict.never == (
        "executor: needs wasm, node offers podman",
        "label ssd: needs 'yes', node has no such label",
        "label zone: needs 'b', node has 'a'",
        "cpu: needs 8 cores, node has 4 cores",
        "memory: needs 9.0 GiB, node has 8.0 GiB",
        "disk: needs 1024.0 TiB, node has 100.0 GiB",
    )


def test_reservations_make_a_job_wait_not_fail():
    caps = node()
    held = [Reservation(cpu_millicores=3500, memory_bytes=6 * GIB)]
    verdict = check_fit(caps, free(caps, reservations=held), req(cpu="1", memory="3GiB"))
    assert verdict.fits_ever and not verdict.fits_now
    assert verdict.not_now == (
        "cpu: needs 1 core, 500m available of 4 cores",
        "memory: needs 3.0 GiB, 2.0 GiB available of 8.0 GiB",
    )


def test_no_capacity_reported_yet_is_not_now():
    caps = node()
    verdict = check_fit(caps, None, req())
    assert verdict.fits_ever and not verdict.fits_now and "not reported" in verdict.not_now[0]


A100 = GpuInfo(0, "nvidia", "NVIDIA A100-SXM4-40GB", 40 * GIB, "GPU-a", "550", "8.0", "nvidia.com/gpu=GPU-a")
T4 = GpuInfo(1, "nvidia", "Tesla T4", 16 * GIB, "GPU-b", "550", "7.5", "nvidia.com/gpu=GPU-b")


def test_gpu_model_is_case_insensitive_substring_and_memory_per_gpu():
    caps = node(gpus=[A100, T4])
    assert check_fit(caps, free(caps), req(gpu="1", gpu_model="a100")).fits_now
    assert check_fit(caps, free(caps), req(gpu="2", gpu_memory="16GiB")).fits_now
    verdict = check_fit(caps, free(caps), req(gpu="2", gpu_memory="20GiB"))
    assert verdict.never == (
        "gpu: needs 2 GPUs ≥ 20.0 GiB each, node has 1 matching "
        "(NVIDIA A100-SXM4-40GB 40.0 GiB, Tesla T4 16.0 GiB)",
    )
    verdict = check_fit(node(), free(node()), req(gpu="1", gpu_model="H100"))
    assert verdict.never == ("gpu: needs 1 GPU model ~'H100', node has 0 matching (no GPUs)",)


def test_a_gpu_no_cdi_spec_names_is_reported_but_never_fits_a_job():
    hidden = replace(T4, cdi_device="")
    caps = node(gpus=[A100, hidden])
    verdict = check_fit(caps, free(caps), req(gpu="2"))
    assert verdict.never == (
        "gpu: needs 2 GPUs, node has 1 matching (NVIDIA A100-SXM4-40GB 40.0 GiB, Tesla T4 16.0 GiB; "
        "1 not offered to jobs (no CDI spec for them))",
    )
    assert free_matching_gpus(caps, free(caps), req(gpu="1")) == (0,)


def test_reserved_or_busy_gpus_are_not_free_now():
    caps = node(gpus=[A100, T4])
    held = [Reservation(gpu_indices=(0,))]
    verdict = check_fit(caps, free(caps, reservations=held), req(gpu="1", gpu_model="A100"))
    assert verdict.fits_ever and verdict.not_now == ("gpu: needs 1 GPU model ~'A100', 0 free now of 2",)
    # Another process holds the T4's memory: it matches the model but not the free memory.
    cap = free(caps, gpu_free=1 * GIB)
    assert free_matching_gpus(caps, cap, req(gpu="1", gpu_memory="8GiB")) == ()
    assert free_matching_gpus(caps, cap, req(gpu="1", gpu_memory="512MiB")) == (0, 1)


def test_preference_score_counts_matching_preferred_labels():
    caps = node(labels={"zone": "a", "disk": "ssd"})
    assert preference_score(caps, req(preferred=["zone=a", "disk=ssd", "rack=9"])) == 2
    assert preference_score(caps, req()) == 0


@given(need=st.integers(0, 64 * 1024), have=st.integers(0, 64 * 1024), total=st.integers(1, 64 * 1024))
def test_memory_verdict_agrees_with_arithmetic(need, have, total):
    caps = node(memory=total * MIB)
    verdict = check_fit(caps, free(caps, memory=have * MIB), WorkloadRequirements(memory_bytes=need * MIB))
    assert verdict.fits_ever == (need <= total)
    assert verdict.fits_now == (need <= min(have, total))
