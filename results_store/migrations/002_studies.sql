-- Studies, batches, links and runs, with experimenter accounts (docs/studies.md).
-- Applied by results_store/migrate.py in one transaction.

-- Experimenter accounts. Usernames are stored lower case (the code folds them).
CREATE TABLE accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username text NOT NULL UNIQUE
        CHECK (username ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    display_name text NOT NULL DEFAULT '',
    -- "scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>"; NULL: no password (API tokens only).
    password_hash text,
    is_admin boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- API tokens: only the SHA-256 of a token is stored; the token is shown once.
CREATE TABLE api_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name text NOT NULL DEFAULT '',
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    -- The first characters of the token ("coh_AbC1"), to tell tokens apart in lists.
    hint text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_tokens_account ON api_tokens (account_id, created_at);

-- A study: its identity. What it contains lives in study_versions / study_files.
CREATE TABLE studies (
    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    -- The JATOS study UUID (or one generated at first import): re-importing the
    -- same UUID makes a new version of the same study.
    uuid text NOT NULL UNIQUE,
    title text NOT NULL,
    current_version integer NOT NULL DEFAULT 0 CHECK (current_version >= 0),
    created_by bigint REFERENCES accounts (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Who may touch a study (admins may touch every study).
CREATE TABLE study_members (
    study_id text NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (study_id, account_id)
);
CREATE INDEX study_members_account ON study_members (account_id);

-- Every imported version of a study, kept for good: runs pin theirs.
CREATE TABLE study_versions (
    study_id text NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    version integer NOT NULL CHECK (version >= 1),
    definition jsonb NOT NULL,          -- results_store.definition.StudyDefinition
    source text NOT NULL DEFAULT '',    -- 'toml', 'json' or 'jatos'
    file_count integer NOT NULL DEFAULT 0,
    total_bytes bigint NOT NULL DEFAULT 0,
    created_by bigint REFERENCES accounts (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (study_id, version)
);

-- File contents by SHA-256, so a re-import stores only the files that changed.
CREATE TABLE blobs (
    sha256 bytea PRIMARY KEY CHECK (length(sha256) = 32),
    size bigint NOT NULL,
    content bytea NOT NULL
);

-- Each version's files (its study assets), by path relative to the assets root.
CREATE TABLE study_files (
    study_id text NOT NULL,
    version integer NOT NULL,
    path text NOT NULL,
    sha256 bytea NOT NULL REFERENCES blobs (sha256),
    size bigint NOT NULL,
    media_type text NOT NULL,
    PRIMARY KEY (study_id, version, path),
    FOREIGN KEY (study_id, version) REFERENCES study_versions (study_id, version)
        ON DELETE CASCADE
);

-- Batches of issue 2 (demo / bare) have no study; study batches follow the
-- study's current version for new runs (a run pins the version it entered with).
ALTER TABLE batches
    ADD COLUMN study_id text REFERENCES studies (id) ON DELETE RESTRICT,
    ADD COLUMN active boolean NOT NULL DEFAULT true,
    ADD COLUMN max_total_participants integer CHECK (max_total_participants >= 0),
    ADD COLUMN allowed_link_types text[] NOT NULL DEFAULT ARRAY[
        'personal_single', 'personal_multiple', 'general_single', 'general_multiple',
        'mturk', 'mturk_sandbox', 'preview'],
    ADD COLUMN json_input jsonb,
    ADD COLUMN group_settings jsonb,
    -- Runs counted against max_total_participants (preview runs do not count).
    -- Only the entry transaction changes it, under the batch's row lock.
    ADD COLUMN participants integer NOT NULL DEFAULT 0,
    ADD COLUMN created_by bigint REFERENCES accounts (id) ON DELETE SET NULL;
CREATE INDEX batches_study ON batches (study_id, created_at) WHERE study_id IS NOT NULL;

-- How participants enter a batch (GET /go/<code>).
CREATE TABLE links (
    code text PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9_-]{16,64}$'),
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,   -- creation order (labels file order)
    batch_id text NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    type text NOT NULL CHECK (type IN (
        'personal_single', 'personal_multiple', 'general_single', 'general_multiple',
        'mturk', 'mturk_sandbox', 'preview')),
    label text,                          -- personal links: the participant's label
    label_required boolean NOT NULL DEFAULT false,   -- oTree room: ask for a label
    -- Personal links have one worker for all their runs; other types get one per
    -- run (MTurk: per workerId).
    worker_id text,
    created_by bigint REFERENCES accounts (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at timestamptz                  -- first entry (single-use links: the only one)
);
CREATE INDEX links_batch ON links (batch_id, seq);

-- A participant's run through a study (JATOS: study result).
CREATE TABLE runs (
    id text PRIMARY KEY,
    batch_id text NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    study_id text NOT NULL REFERENCES studies (id),
    study_version integer NOT NULL,
    link_code text REFERENCES links (code) ON DELETE SET NULL,
    link_type text NOT NULL,
    worker_id text NOT NULL,
    label text,
    url_query jsonb NOT NULL DEFAULT '{}'::jsonb,
    preview boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (study_id, study_version) REFERENCES study_versions (study_id, version)
);
CREATE INDEX runs_batch ON runs (batch_id, created_at, id);
CREATE INDEX runs_link ON runs (link_code) WHERE link_code IS NOT NULL;
-- MTurk: one run per worker and batch (the entry transaction checks it first,
-- under the batch lock; this is the second line of defence).
CREATE UNIQUE INDEX runs_mturk_worker ON runs (batch_id, worker_id)
    WHERE link_type IN ('mturk', 'mturk_sandbox');
