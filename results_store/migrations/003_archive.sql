-- The archive of batch timelines (docs/archive.md). Applied by results_store/migrate.py
-- in one transaction.
--
-- Positions are Redis stream entry IDs "<ms>-<seq>"; they are kept as text (pos)
-- and as numbers (ms, seq) for ordering and range scans. No foreign key to
-- batches: the archive is written from the event log alone, and outlives rows
-- an experimenter deletes (erasure of timeline contents is explicit, below).

-- Every event of a batch's stream, copied once, exactly as written (payload is
-- `json`, not `jsonb`: jsonb would reorder object members and respell numbers,
-- and a replayed session document must equal the live one byte for byte;
-- `->` and `->>` work on json too).
CREATE TABLE archived_events (
    batch_id text NOT NULL,
    ms bigint NOT NULL,
    seq bigint NOT NULL,
    pos text NOT NULL,
    scope text NOT NULL,
    kind text NOT NULL,
    version integer NOT NULL,
    schema integer NOT NULL,
    -- The run whose command caused the event (NULL for system and admin events).
    run_id text,
    -- The member a group event is about, or a group message's addressee.
    member text,
    payload json NOT NULL,
    PRIMARY KEY (batch_id, ms, seq)
);
CREATE INDEX archived_events_scope ON archived_events (batch_id, scope, ms, seq);

-- Snapshots of a batch's projected state (projector.encode_state), keyed by the
-- position of the last event folded in. Copied from the worker's snapshot stream
-- ('worker'), or made by the finalizer where the worker's were gone before they
-- could be copied ('finalizer'), so replaying to any position folds few events.
CREATE TABLE archived_snapshots (
    batch_id text NOT NULL,
    ms bigint NOT NULL,
    seq bigint NOT NULL,
    pos text NOT NULL,
    -- Events folded in (the sum of the state's scope versions).
    events bigint NOT NULL,
    source text NOT NULL DEFAULT 'worker' CHECK (source IN ('worker', 'finalizer')),
    state bytea NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, ms, seq)
);

-- Study session contents, which live beside the stream (an abort erases them while
-- the study_session_written events stay as markers). Deleted here too when the
-- run's abort is seen.
CREATE TABLE archived_study_sessions (
    batch_id text NOT NULL,
    run_id text NOT NULL,
    -- Run-scope version of the study_session_written event.
    version integer NOT NULL,
    data json NOT NULL,
    PRIMARY KEY (batch_id, run_id, version)
);

-- One row per committed copy (a segment of consecutive events), written in the
-- same transaction as its events: the newest row is the batch's watermark.
ALTER TABLE archived_segments
    ADD COLUMN first_ms bigint,
    ADD COLUMN first_seq bigint,
    ADD COLUMN last_ms bigint,
    ADD COLUMN last_seq bigint,
    ADD COLUMN events integer NOT NULL DEFAULT 0;
CREATE INDEX archived_segments_last ON archived_segments (batch_id, last_ms, last_seq);
