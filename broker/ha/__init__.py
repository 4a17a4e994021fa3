"""High availability on PostgreSQL: API replicas and one elected scheduler with a fence.

`election` keeps one active scheduler (advisory lock on a dedicated session, a lease, an
epoch); `notify` carries wake-ups between processes (LISTEN/NOTIFY); `scheduler` runs the
dispatcher only while elected; `api` is the store-only stand-in a replica serves with.
"""
