"""What a node can do (metrics_agent.capabilities: NodeCapabilities) and what it has free now
(metrics_agent.capacity: NodeCapacity).

Nothing is imported here: `form` needs only metrics_agent.units, and a package that imported
its modules would make every command load them.
"""
