"""Membership and gossip: the node driver, SWIM probes, suspicions, refutation, the wire tags.

Pure decision cores (gossip, membership, probe order, record refresh) and the trio driver `node`.
"""
