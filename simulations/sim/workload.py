"""The jobs of a run: drawn up front from the seeded Random, submitted the way formd does.

Each job is a WASM job (the simulated executor's kind) whose spec carries what the run will
do (duration, exit code; see executor.py), a CPU request picked from `--job-cpu` so busy
nodes decline and the next ranked node takes over, and a nonce from the seeded Random (the
job id is blake3 of the spec, so ids are the same in every run of a seed). Submission times
are spread over the first 60% of the fault window, leaving time for failover to finish.
With `--capability-jobs`, that share of the jobs needs one slot of a named capability (picked
from `--capabilities`); those draws come from their own seeded Random, so the other draws of
a seed stay the same.

Submitting is what `form submit` makes the submitter's formd do (daemon/control/jobs_api.py): the
module blob goes into its blob store, the signed job record into its document, the update
into its store and gossip queue, and its job loop is woken. Runners fetch the module from
the submitter over the simulated transport with the real blob fetch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import blake3

from crdt_state.signing import seal_record
from daemon.jobs.loop import node_now_ms
from pack_manager.jobspec import JobSpec
from pack_manager.requirements import WorkloadRequirements
from pack_manager.shards import shard_specs

from .executor import DURATION_ENV, EXIT_ENV
from .options import SimOptions
from .world import Machine

MODULE = b"\x00asm\x01\x00\x00\x00"  # an empty WASM module: the simulated executor never runs it
MODULE_DIGEST = blake3.blake3(MODULE).hexdigest()
FAILING_SHARE = 0.02  # jobs that exit non-zero: the failed path is exercised too
TIMEOUT_MS = 600_000


@dataclass(frozen=True)
class Submission:
    at_s: float  # from the start of the active phase
    machine: int  # the machine asked to submit (the next one up, if it is down then)
    nonce: bytes
    duration_ms: int
    cpu_millicores: int
    exit_code: int
    shards: int = 1
    capability: str = ""  # the named capability the job needs a slot of; "": none

    def specs(self, submitter: bytes) -> list[JobSpec]:
        """The job's spec, or its shards' specs: every shard is a job the invariants check."""
        spec = self.spec(submitter)
        return shard_specs(spec, self.shards, False) if self.shards > 1 else [spec]

    def spec(self, submitter: bytes) -> JobSpec:
        return JobSpec(
            kind="wasm",
            submitter=submitter,
            nonce=self.nonce,
            module=MODULE_DIGEST,
            requirements=WorkloadRequirements(
                cpu_millicores=self.cpu_millicores,
                executor="wasm",
                capabilities=(self.capability,) if self.capability else (),
            ),
            timeout_ms=TIMEOUT_MS,
            env={DURATION_ENV: str(self.duration_ms), EXIT_ENV: str(self.exit_code)},
        )


def plan_jobs(options: SimOptions, rng: random.Random) -> list[Submission]:
    start = options.quiet
    end = options.quiet + 0.6 * (options.seconds - options.quiet)
    low, high = options.job_duration
    named = [name for name, _ in options.capabilities]
    picks = random.Random(f"capability-jobs/{options.seed}")
    plan = []
    for _ in range(options.jobs):
        plan.append(
            Submission(
                at_s=round(rng.uniform(start, end), 3),
                machine=rng.randrange(options.nodes),
                nonce=rng.randbytes(16),
                duration_ms=int(rng.uniform(low, high) * 1000),
                cpu_millicores=rng.choice(options.job_cpu),
                exit_code=1 if rng.random() < FAILING_SHARE else 0,
                shards=options.job_shards,
                capability=picks.choice(named) if named and picks.random() < options.capability_jobs else "",
            )
        )
    plan.sort(key=lambda s: s.at_s)
    return plan


def submit(machine: Machine, submission: Submission) -> list[str]:
    """The job (or its shards) as the machine's formd accepts it; returns the job ids (hex)."""
    node, loop = machine.node, machine.loop
    assert node is not None and loop is not None
    loop.blobs.put_bytes(MODULE)
    ids = []
    for spec in submission.specs(node.identity.node_id):
        job_hex = spec.job_id().hex()
        envelope = seal_record(
            node.identity.private_key, "job", {"spec": spec.pack(), "submitted_ms": node_now_ms(node)}
        )
        node.document.put_local("jobs", job_hex, envelope)
        ids.append(job_hex)
    node.commit_local(durable=True)
    loop.wake()
    return ids
