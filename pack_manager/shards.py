"""Sharded jobs (the cluster of k): one submit becomes N shard jobs of one group. Pure.

Each shard is a job of its own (own record, own runs, own failover and retries); what makes
them a group is the `shard_group` id they share, which ranks the nodes for them all, and
their index, which starts each on its own node of that order (placement.shard_rotation). So
every node computes the same assignment on its own view, and a shard whose node dies moves on
alone. Shard i gets FORM_SHARD_INDEX=i and FORM_SHARD_COUNT=N in its environment and, with
split inputs, inputs i, i+N, i+2N, ... The job succeeds when every shard has.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import blake3

from .jobspec import MAX_SHARDS, JobSpec, JobSpecError
from .jobstate import FINAL_STATES, SUCCEEDED

_GROUP_DOMAIN = b"formnet shard group v1\x00"
RESERVED_ENV = ("FORM_SHARD_INDEX", "FORM_SHARD_COUNT")


def shard_specs(spec: JobSpec, count: int, split_inputs: bool) -> list[JobSpec]:
    """The N shard specs for a submitted spec; JobSpecError when it cannot be sharded."""
    if not 1 <= count <= MAX_SHARDS:
        raise JobSpecError(f"shards: {count} is outside 1..{MAX_SHARDS}")
    if split_inputs and not spec.inputs:
        raise JobSpecError("split_inputs: the job has no inputs to split")
    taken = [key for key in RESERVED_ENV if key in spec.env]
    if taken:
        raise JobSpecError(f"env: {', '.join(taken)} is set for each shard by formnet")
    group = blake3.blake3(_GROUP_DOMAIN + spec.pack()).digest()  # the spec's random nonce makes it unique
    return [
        replace(
            spec,
            shard_index=index,
            shard_count=count,
            shard_group=group,
            env={**spec.env, "FORM_SHARD_INDEX": str(index), "FORM_SHARD_COUNT": str(count)},
            inputs=spec.inputs[index::count] if split_inputs else spec.inputs,
        )
        for index in range(count)
    ]


def group_status(group_hex: str, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """A sharded job's status object (the shape of one job's) from its shards' status objects,
    given by index: succeeded when every shard has; final when every shard is, with the first
    shard that did not succeed speaking; unschedulable when a shard is; else running while
    any shard runs, then claimed, then queued."""
    states = [shard["state"] for shard in shards]
    if all(state == SUCCEEDED for state in states):
        state, reason = SUCCEEDED, f"all {len(shards)} shards succeeded"
    elif all(state in FINAL_STATES for state in states):
        worst = next(shard for shard in shards if shard["state"] != SUCCEEDED)
        state = worst["state"]
        reason = f"shard {shards.index(worst)} {state}: {worst['reason']}"
    else:
        state = next(
            (s for s in ("unschedulable", "running", "claimed") if s in states),
            "queued",
        )
        done = states.count(SUCCEEDED)
        waiting = next(i for i, shard in enumerate(shards) if shard["state"] not in FINAL_STATES)
        reason = f"{done} of {len(shards)} shards succeeded; shard {waiting}: {shards[waiting]['reason']}"
    first = shards[0]
    return {
        "id": group_hex,
        "kind": first["kind"],
        "state": state,
        "reason": reason,
        "reasons": [r for shard in shards for r in shard["reasons"]],
        "node": None,
        "attempt": max(shard["attempt"] for shard in shards),
        "submitted_at": first["submitted_at"],
        "started_at": min((s["started_at"] for s in shards if s["started_at"]), default=None),
        "finished_at": max((s["finished_at"] for s in shards), default=None)
        if all(s["finished_at"] for s in shards)
        else None,
        "exit_code": None,
        "outputs": [],
        "log": None,
        "replicas": [],
        "verified": False,
        "verify_reason": "",
        "attempts": [],
        "shards": [
            {
                "index": index,
                "id": shard["id"],
                "state": shard["state"],
                "reason": shard["reason"],
                "node": shard["node"],
                "attempt": shard["attempt"],
                "exit_code": shard["exit_code"],
                "outputs": shard["outputs"],
                "attempts": shard["attempts"],
            }
            for index, shard in enumerate(shards)
        ],
    }
