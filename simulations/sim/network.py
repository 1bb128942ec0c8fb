"""The simulated network, plus per-node extra latency for slow nodes.

daemon.transport.memory.SimNetwork draws one latency per message from a network-wide range;
a slow node (an overloaded machine, a congested uplink) adds `extra` seconds to every
message it sends or receives. The draw itself still comes from the network's seeded Random.
"""

from __future__ import annotations

from daemon.transport.memory import SimNetwork


class SlowLinkNetwork(SimNetwork):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.extra_latency: dict[str, float] = {}  # address -> seconds added to its messages
        self._link_extra = 0.0

    def _dispatch(self, source, target, kind, request_id, payload) -> None:
        extra = self.extra_latency
        self._link_extra = (extra.get(source.local_address, 0.0) + extra.get(target, 0.0)) if extra else 0.0
        super()._dispatch(source, target, kind, request_id, payload)

    def _draw_latency(self) -> float:
        return super()._draw_latency() + self._link_extra
