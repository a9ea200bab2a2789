-- Cohort's initial schema. Applied by results_store/migrate.py in one transaction.

-- Which migration files have run (the runner also creates it before the first one).
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The durable record of batches.
CREATE TABLE batches (
    id text PRIMARY KEY,
    label text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Segments of a batch's event stream that the finalizer has copied into Postgres.
-- The row is written in the same transaction as the copied events, so a segment
-- is archived exactly once; only then is it trimmed from Redis. Positions are
-- Redis stream entry IDs ("<ms>-<seq>").
CREATE TABLE archived_segments (
    batch_id text NOT NULL,
    first_pos text NOT NULL,
    last_pos text NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, first_pos)
);
