"""Tables for humans; the --json output is the daemon's objects unchanged."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from metrics_agent.units import format_bytes, format_cpu

_STATUS_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}


def _age(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds)}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _resource(free: Any, total: Any, fmt) -> str:
    if not isinstance(total, int):
        return "-"
    if not isinstance(free, int):
        return fmt(total)
    return f"{fmt(free)} / {fmt(total)}"


def _gpus(capabilities: dict, capacity: dict) -> str:
    gpus = capabilities.get("gpus") or []
    if not gpus:
        return "-"
    offered = {g.get("index") for g in gpus if g.get("cdi_device")}
    free = len(set(capacity.get("allocatable_gpu_indices") or []) & offered)
    models = sorted({str(g.get("model", "?")) for g in gpus})
    hidden = len(gpus) - len(offered)
    return f"{free}/{len(gpus)} {', '.join(models)}" + (
        f" ({hidden} not offered: no CDI spec)" if hidden else ""
    )


def _named(capabilities: dict, capacity: dict) -> str:
    named = capabilities.get("named") or {}
    in_use = capacity.get("capabilities_in_use") or {}
    if not isinstance(named, dict) or not named:
        return "-"
    return ", ".join(f"{name} {in_use.get(name, 0)}/{slots}" for name, slots in sorted(named.items()))


def images_table(images: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAMES", "ID", "SIZE", "HOLDERS"):
        table.add_column(column, no_wrap=column != "NAMES")
    for image in images:
        holders = ", ".join(
            h["short_id"] + ("" if h.get("status") == "alive" else f" ({h.get('status')})")
            for h in image.get("holders", [])
        )
        table.add_row(
            "\n".join(image.get("names") or ["-"]),
            str(image.get("id", ""))[:12],
            format_bytes(image.get("size") or 0),
            holders or "-",
        )
    return table


def nodes_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in (
        "ID",
        "ADDRESS",
        "STATUS",
        "SEEN",
        "ACKED",
        "SUSPECTED BY",
        "CPU free/total",
        "MEMORY free/total",
        "DISK free/total",
        "GPU",
        "EXECUTORS",
        "REGION",
        "CAPABILITIES used/max",
        "LABELS",
    ):
        table.add_column(column, no_wrap=column not in ("LABELS", "CAPABILITIES used/max"))
    for node in nodes:
        caps = node.get("capabilities") or {}
        capacity = node.get("capacity") or {}
        status = str(node.get("status", "?"))
        short = str(node.get("id", ""))[:12] + (" *" if node.get("self") else "")
        table.add_row(
            short,
            str(node.get("address", "")),
            f"[{_STATUS_STYLE.get(status, '')}]{status}[/]" if status in _STATUS_STYLE else status,
            _age(node.get("last_heartbeat_age_s")),
            _age(node.get("last_probe_ack_age_s")),
            str(node.get("suspected_by") or "-"),
            _resource(capacity.get("allocatable_cpu_millicores"), caps.get("cpu_millicores"), format_cpu),
            _resource(capacity.get("allocatable_memory_bytes"), caps.get("memory_bytes"), format_bytes),
            _resource(capacity.get("allocatable_disk_bytes"), caps.get("disk_bytes"), format_bytes),
            _gpus(caps, capacity),
            ",".join(node.get("executors") or []) or "-",
            str(caps.get("region") or "-"),
            _named(caps, capacity),
            ",".join(f"{k}={v}" for k, v in sorted((node.get("labels") or {}).items())) or "-",
        )
    return table


def keys_table(keys: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("KEY ID")
    table.add_column("PRIMARY")
    for key in keys:
        table.add_row(str(key.get("key_id")), "yes" if key.get("primary") else "")
    return table


def acl_table(grants: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("CLIENT KEY", "ROLE", "MAX RUNNING", "UPDATED", "BY NODE"):
        table.add_column(column, no_wrap=True)
    for grant in grants:
        limit = grant.get("max_running")
        table.add_row(
            str(grant.get("key")),
            str(grant.get("role")),
            "-" if limit is None else str(limit),
            str(grant.get("updated_at")),
            str(grant.get("by"))[:12],
        )
    return table


def print_table(table: Table) -> None:
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console = Console(width=240)
    console.print(table)


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "KIND", "STATE", "NODE", "ATTEMPT", "SUBMITTED", "REASON"):
        table.add_column(column, no_wrap=column != "REASON")
    for job in jobs:
        table.add_row(
            job["id"][:16],
            job.get("kind", "-"),
            job["state"],
            (job["node"] or "-")[:12],
            str(job["attempt"]),
            job["submitted_at"] or "-",
            job["reason"],
        )
    return table


def explain_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("RANK", "NODE", "STATUS", "FITS", "HOLDS", "RUN", "REASONS"):
        table.add_column(column, no_wrap=column != "REASONS")
    for row in rows:
        fits = "yes" if row["fits_now"] else ("later" if row["fits"] else "never")
        short = row["node"][:12] + (" *" if row["self"] else "")
        status = row["status"]
        table.add_row(
            str(row["rank"]),
            short,
            f"[{_STATUS_STYLE.get(status, '')}]{status}[/]" if status in _STATUS_STYLE else status,
            fits,
            str(row.get("holds", 0)),
            row["run"] or "-",
            "; ".join(row["reasons"]) or (row["run_reason"] or ""),
        )
    return table
