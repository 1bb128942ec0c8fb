"""Moving sealed frames between nodes: the Transport interface, TCP and in-memory transports.

Frames and keyring are pure; `tcp` and `memory` are trio drivers.
"""
