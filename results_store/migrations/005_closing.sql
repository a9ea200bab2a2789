-- Closing batches (docs/archive.md, "Closing a batch"). Applied by
-- results_store/migrate.py in one transaction.

-- When an experimenter closed the batch: no participant enters it again and it
-- cannot be switched on again. Its timeline stays replayable from the archive.
ALTER TABLE batches ADD COLUMN closed_at timestamptz;

-- One row per batch whose whole timeline the finalizer archived after its
-- batch_closed event, written before it removes the batch's keys from Redis.
-- closed_pos is the position of that event, and of the final snapshot in
-- archived_snapshots. No foreign key to batches, like the rest of the archive.
CREATE TABLE archived_batches (
    batch_id text PRIMARY KEY,
    closed_pos text NOT NULL,
    closed_ms bigint NOT NULL,
    closed_seq bigint NOT NULL,
    events bigint NOT NULL,
    runs_ended integer NOT NULL DEFAULT 0,
    archived_at timestamptz NOT NULL DEFAULT now(),
    -- Set once the batch's keys are gone from Redis.
    removed_at timestamptz
);
