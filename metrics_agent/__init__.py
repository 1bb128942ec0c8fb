"""What a node can do (NodeCapabilities) and what it has free now (NodeCapacity)."""

from .capabilities import KNOWN_EXECUTORS, GpuInfo, NodeCapabilities
from .capacity import GpuUsage, NodeCapacity, Reservation, apply_reservations

__all__ = [
    "KNOWN_EXECUTORS",
    "GpuInfo",
    "GpuUsage",
    "NodeCapabilities",
    "NodeCapacity",
    "Reservation",
    "apply_reservations",
]
