"""The store's schema, written once for both engines (`{time}`, `{key}`... come from the dialect)."""

from __future__ import annotations

import hashlib

from broker.store._dialect import Db

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id {key} PRIMARY KEY,
  tenant TEXT NOT NULL,
  client_id TEXT,
  state TEXT NOT NULL,
  spec TEXT NOT NULL,
  created_at {time} NOT NULL,
  updated_at {time} NOT NULL,
  site TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER,
  log_tail TEXT NOT NULL DEFAULT '',
  message TEXT NOT NULL DEFAULT '',
  policy_hash TEXT NOT NULL DEFAULT '',
  last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_client_id ON jobs(tenant, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, id);
CREATE INDEX IF NOT EXISTS jobs_tenant_state ON jobs(tenant, state);
-- Covers the queue-depth metric's GROUP BY: an index-only count, no sort (6x at 300k jobs).
CREATE INDEX IF NOT EXISTS jobs_depth ON jobs(state, site, tenant);
-- Each tenant's newest succeeded jobs (learned runtime ratios): touched once per finished job.
CREATE INDEX IF NOT EXISTS jobs_succeeded ON jobs(tenant, id) WHERE state = 'SUCCEEDED';
CREATE TABLE IF NOT EXISTS job_labels (
  job_id {key} NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (key, value, job_id)
) {norowid};
CREATE TABLE IF NOT EXISTS events (
  job_id {key} NOT NULL, seq INTEGER NOT NULL, time {time} NOT NULL, kind TEXT NOT NULL,
  state TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL, epoch {bigint},
  PRIMARY KEY (job_id, seq)
) {norowid};
CREATE TABLE IF NOT EXISTS attempts (
  id {key} PRIMARY KEY, job_id {key} NOT NULL, number INTEGER NOT NULL, site TEXT NOT NULL,
  offer TEXT NOT NULL, token TEXT NOT NULL UNIQUE, state TEXT NOT NULL, backend_id TEXT,
  created_at {time} NOT NULL, updated_at {time} NOT NULL, error TEXT NOT NULL DEFAULT '',
  secret_hash TEXT NOT NULL DEFAULT '', epoch {bigint}
);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts(job_id, number);
CREATE INDEX IF NOT EXISTS attempts_state ON attempts(state);
CREATE INDEX IF NOT EXISTS attempts_site ON attempts(site, created_at);
CREATE TABLE IF NOT EXISTS spend (
  attempt_id {key} PRIMARY KEY, tenant TEXT NOT NULL, site TEXT NOT NULL, job_id TEXT NOT NULL,
  month TEXT NOT NULL, reserved {real} NOT NULL, spent {real} NOT NULL, voucher {real} NOT NULL,
  settled {bool} NOT NULL, voucher_id TEXT, fx {real}
);
CREATE INDEX IF NOT EXISTS spend_month ON spend(month, tenant);
-- What each voucher pays of an attempt (a burst draws on one after another as each runs out);
-- `spend.voucher` is their sum, `spend.voucher_id` the first.
CREATE TABLE IF NOT EXISTS spend_draws (
  attempt_id {key} NOT NULL, ord INTEGER NOT NULL, voucher_id TEXT NOT NULL, tenant TEXT NOT NULL,
  amount {real} NOT NULL, PRIMARY KEY (attempt_id, voucher_id)
);
CREATE INDEX IF NOT EXISTS spend_draws_voucher ON spend_draws(tenant, voucher_id);
CREATE TABLE IF NOT EXISTS policy_versions (
  id {serial}, hash {key} NOT NULL, result TEXT NOT NULL,
  source TEXT NOT NULL, content TEXT NOT NULL, errors TEXT NOT NULL, time {time} NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_versions_hash ON policy_versions(hash);
-- Submissions refused by policy at the door (no job row): the audit trail's `refused` kind.
CREATE TABLE IF NOT EXISTS refused_submissions (
  id {serial}, time {time} NOT NULL, tenant {key} NOT NULL, by_name TEXT NOT NULL, role TEXT NOT NULL,
  job_name TEXT NOT NULL, message TEXT NOT NULL, rules TEXT NOT NULL, policy_hash TEXT NOT NULL,
  spec TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refused_tenant ON refused_submissions(tenant, id);
CREATE INDEX IF NOT EXISTS refused_time ON refused_submissions(time);
-- Each tokens file put in force (who may call in which role, no secret): the audit's `access` kind.
CREATE TABLE IF NOT EXISTS token_sets (
  id {serial}, time {time} NOT NULL, source TEXT NOT NULL, digest TEXT NOT NULL, entries TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS token_sets_time ON token_sets(time);
-- Sites an operator drained (no new placements), and every drain and undrain for the audit trail.
CREATE TABLE IF NOT EXISTS site_drains (
  site {key} PRIMARY KEY, by_name TEXT NOT NULL, reason TEXT NOT NULL, since {time} NOT NULL
);
CREATE TABLE IF NOT EXISTS site_drain_log (
  id {serial}, time {time} NOT NULL, site TEXT NOT NULL, action TEXT NOT NULL, by_name TEXT NOT NULL,
  reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS site_drain_log_time ON site_drain_log(time);
-- Operator actions refused (a tenant's drain, a cancel of another tenant's job): `_refused_actions`.
CREATE TABLE IF NOT EXISTS refused_actions (
  id {serial}, time {time} NOT NULL, tenant {key} NOT NULL, by_name TEXT NOT NULL, role TEXT NOT NULL,
  action TEXT NOT NULL, target TEXT NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refused_actions_time ON refused_actions(time);
-- Cancels of running jobs an API replica recorded, until the scheduler settles them (`_cancels`).
CREATE TABLE IF NOT EXISTS cancel_requests (
  job_id {key} PRIMARY KEY, by_name TEXT NOT NULL, role TEXT NOT NULL, time {time} NOT NULL
);
CREATE TABLE IF NOT EXISTS fair_usage (
  tenant {key} PRIMARY KEY, half_life_s {real} NOT NULL, at_s {real} NOT NULL,
  accelerators {real} NOT NULL, cpus {real} NOT NULL, memory_gb {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS reclaim_budget (
  partition_id {key} PRIMARY KEY, level {real} NOT NULL, at_s {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS reclaim_booked (
  attempt_id {key} PRIMARY KEY, partition_id {key} NOT NULL, units INTEGER NOT NULL,
  for_job {key} NOT NULL, since_s {real} NOT NULL, until_s {real} NOT NULL, stopped INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leadership (
  id INTEGER PRIMARY KEY CHECK (id = 1), epoch {bigint} NOT NULL, holder TEXT,
  holder_pid {bigint}, lease_until {time}
);
INSERT INTO leadership (id, epoch) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS site_report (
  id INTEGER PRIMARY KEY CHECK (id = 1), epoch {bigint}, time {time} NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS broker_identity (
  id INTEGER PRIMARY KEY CHECK (id = 1), broker_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_version (
  id INTEGER PRIMARY KEY CHECK (id = 1), fingerprint TEXT NOT NULL
)
"""

# Columns added after the first release: a data dir or database from before gets them on open.
ADDED_COLUMNS = (
    ("attempts", "secret_hash", "TEXT NOT NULL DEFAULT ''"),
    ("attempts", "epoch", "{bigint}"),
    ("events", "epoch", "{bigint}"),
    ("spend", "fx", "{real}"),
    ("reclaim_booked", "beside", "INTEGER NOT NULL DEFAULT 0"),
    ("policy_versions", "inputs", "TEXT NOT NULL DEFAULT ''"),
    # The referenced files' texts as loaded (JSON [[name, text], ...]); '' in entries from before.
    ("policy_versions", "files", "TEXT NOT NULL DEFAULT ''"),
    ("jobs", "priority_rank", "INTEGER NOT NULL DEFAULT 1"),
    ("jobs", "queue_group", "TEXT NOT NULL DEFAULT ''"),
    # A burst's run (start, end) so that its money is counted in each budget month it runs in;
    # NULL in entries written before: those stay wholly in their `month`.
    ("spend", "started", "{time}"),
    ("spend", "ends", "{time}"),
)

AFTER_COLUMNS = """
DROP INDEX IF EXISTS jobs_queue_heads;
-- Which (tenant, hardware asked) groups have queued jobs, and each one's first by priority then
-- age: what a pass reads of a deep queue (`broker.dispatch.queue_read`).
CREATE INDEX IF NOT EXISTS jobs_queue_groups ON jobs(state, tenant, queue_group, priority_rank, id);
-- The entries a budget month counts beside those filed under it: runs reaching into it.
CREATE INDEX IF NOT EXISTS spend_ends ON spend(ends);
-- Entries written before `spend_draws`: their one voucher paid all of `voucher`.
INSERT INTO spend_draws (attempt_id, ord, voucher_id, tenant, amount)
  SELECT attempt_id, 0, voucher_id, tenant, voucher FROM spend
  WHERE voucher_id IS NOT NULL AND voucher > 0
  AND NOT EXISTS (SELECT 1 FROM spend_draws d WHERE d.attempt_id = spend.attempt_id)
"""

JOB_COLS = (
    "id, tenant, client_id, state, spec, created_at, updated_at, site, attempts, exit_code, "
    "log_tail, message, policy_hash"
)
ATTEMPT_COLS = (
    "id, job_id, number, site, offer, token, state, backend_id, created_at, updated_at, error, secret_hash"
)
SPEND_COLS = (
    "tenant, site, job_id, attempt_id, month, reserved, spent, voucher, settled, voucher_id, fx, "
    "started, ends"
)
EVENT_COLS = "job_id, seq, time, kind, state, message, data"
INSERT_EVENT = f"INSERT INTO events ({EVENT_COLS}, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


FINGERPRINT = hashlib.sha256(repr((SCHEMA, ADDED_COLUMNS, AFTER_COLUMNS)).encode()).hexdigest()[:16]
"""What `schema_version` holds once this code's schema is in place."""


def create_schema(db: Db) -> None:
    """Create what is missing (inside the caller's transaction, under the schema lock).

    A schema already in place is only read: on PostgreSQL `CREATE INDEX IF NOT EXISTS` takes a
    SHARE lock on its table even when the index exists, so opening a store (a CLI command, a
    new replica) waited on every writer and could deadlock with one."""
    dialect = db.dialect
    if _in_place(db):
        return
    dialect.lock_schema(db)
    for statement in SCHEMA.format(**dialect.types).split(";"):
        if statement.strip():
            db.run(statement)
    for table, column, decl in ADDED_COLUMNS:
        if column not in dialect.columns(db, table):
            db.run(f"ALTER TABLE {table} ADD COLUMN {column} {decl.format(**dialect.types)}")
    for statement in AFTER_COLUMNS.split(";"):
        if statement.strip():
            db.run(statement)
    db.run(
        "INSERT INTO schema_version (id, fingerprint) VALUES (1, ?) "
        "ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint",
        (FINGERPRINT,),
    )


def _in_place(db: Db) -> bool:
    """This code's schema is in place already (catalog reads and one row: no table lock). The
    added columns are looked for too: a store restored or edited around the broker may lack them."""
    if "fingerprint" not in db.dialect.columns(db, "schema_version"):
        return False
    row = db.one("SELECT fingerprint FROM schema_version WHERE id = 1")
    if row is None or row[0] != FINGERPRINT:
        return False
    return all(column in db.dialect.columns(db, table) for table, column, _ in ADDED_COLUMNS)
