"""The audit trail: one JSON line per decision, hash-chained, rotated by size.

    writer.py   AuditWriter: a thread and a bounded queue, so the event loop never waits for the disk
    chain.py    the record format: canonical JSON, each record's hash and the hash of the one before
    verify.py   ``semroute audit verify``: names the first edited, removed or reordered record
    labels.py   audit records joined with labels or outcomes -> labelled JSONL for ``semroute calibrate``
"""
