"""PostgreSQL schema, lock keys and column lists for `broker.store.postgres`."""

# Ids are compared and ordered byte-wise (COLLATE "C"), exactly like SQLite's BINARY collation,
# so pagination tokens and "oldest first" do not depend on the database's locale.
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT COLLATE "C" PRIMARY KEY,
  tenant TEXT NOT NULL,
  client_id TEXT,
  state TEXT NOT NULL,
  spec TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL,
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
CREATE TABLE IF NOT EXISTS job_labels (
  job_id TEXT COLLATE "C" NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (key, value, job_id)
);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT COLLATE "C" NOT NULL, seq INTEGER NOT NULL, time TIMESTAMPTZ NOT NULL,
  kind TEXT NOT NULL, state TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS attempts (
  id TEXT COLLATE "C" PRIMARY KEY, job_id TEXT COLLATE "C" NOT NULL, number INTEGER NOT NULL,
  site TEXT NOT NULL, offer TEXT NOT NULL, token TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
  backend_id TEXT, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
  error TEXT NOT NULL DEFAULT '', secret_hash TEXT NOT NULL DEFAULT ''
);
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS secret_hash TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS attempts_job ON attempts(job_id, number);
CREATE INDEX IF NOT EXISTS attempts_state ON attempts(state);
CREATE TABLE IF NOT EXISTS spend (
  attempt_id TEXT COLLATE "C" PRIMARY KEY, tenant TEXT NOT NULL, site TEXT NOT NULL,
  job_id TEXT NOT NULL, month TEXT NOT NULL, reserved DOUBLE PRECISION NOT NULL,
  spent DOUBLE PRECISION NOT NULL, voucher DOUBLE PRECISION NOT NULL, settled BOOLEAN NOT NULL,
  voucher_id TEXT
);
CREATE INDEX IF NOT EXISTS spend_month ON spend(month, tenant);
CREATE TABLE IF NOT EXISTS policy_versions (
  id BIGSERIAL PRIMARY KEY, hash TEXT COLLATE "C" NOT NULL, result TEXT NOT NULL,
  source TEXT NOT NULL, content TEXT NOT NULL, errors TEXT NOT NULL, time TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_versions_hash ON policy_versions(hash);
"""

# Advisory lock keys (first int of the two-int form): schema creation, and one lock per month
# that serialises every change to that month's spend totals.
LOCK_SCHEMA = 0x5A42_0001
LOCK_SPEND = 0x5A42_0002

JOB_COLS = (
    "id, tenant, client_id, state, spec, created_at, updated_at, site, attempts, exit_code, "
    "log_tail, message, policy_hash"
)
ATTEMPT_COLS = (
    "id, job_id, number, site, offer, token, state, backend_id, created_at, updated_at, error, secret_hash"
)
SPEND_COLS = "tenant, site, job_id, attempt_id, month, reserved, spent, voucher, settled, voucher_id"
