"""The job loop and what it keeps: records, retirement, node views, placement orders, blobs.

A trio driver around pack_manager.scheduling; the caches and records here do no I/O.
"""
