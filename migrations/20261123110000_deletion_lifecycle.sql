-- Deletion with a grace period (seed 000), purge, tombstones and version retention.

-- One row per scheduled deletion. Cancelled and completed rows stay, as the function's audit trail;
-- at most one is open (pending, or being purged) per function.
CREATE TABLE pending_deletions (
    id             uuid PRIMARY KEY,
    function_id    uuid NOT NULL REFERENCES functions (id),
    reason         text NOT NULL
                   CHECK (reason IN ('user_requested', 'stale_function', 'quota_exceeded')),
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'purging', 'cancelled', 'completed')),
    -- The image the function served when the deletion was scheduled, as the seed shows it.
    image_tag      text,
    deletion_date  timestamptz NOT NULL,
    scheduled_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at   timestamptz,
    completed_at   timestamptz,
    CHECK (deletion_date >= scheduled_at),
    CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
    CHECK ((status = 'completed') = (completed_at IS NOT NULL))
);
CREATE UNIQUE INDEX pending_deletions_one_open_per_function
    ON pending_deletions (function_id) WHERE status IN ('pending', 'purging');
-- What the scheduler's purge sweep reads.
CREATE INDEX pending_deletions_due ON pending_deletions (deletion_date) WHERE status = 'pending';

-- A purged function stays as a tombstone: its history remains readable and its name stays
-- reserved for its owner until `name_reserved_until`; after that the owner may reuse the name
-- for a new function, so names are unique among live functions only.
ALTER TABLE functions
    ADD COLUMN deleted_at timestamptz,
    ADD COLUMN name_reserved_until timestamptz,
    ADD CONSTRAINT functions_deleted_at_matches_status
        CHECK ((status = 'deleted') = (deleted_at IS NOT NULL));
ALTER TABLE functions DROP CONSTRAINT functions_owner_id_name_key;
CREATE UNIQUE INDEX functions_live_name ON functions (owner_id, name) WHERE status <> 'deleted';
CREATE INDEX functions_tombstones_by_name ON functions (owner_id, name) WHERE status = 'deleted';

-- Pruning removes a version's image and archive but keeps its row. `prune_started_at` is set
-- first, under the function's lock, so a rollback can no longer pick the version; `pruned_at`
-- once its image and archive are gone. A crash in between leaves work a re-run finishes.
ALTER TABLE deployments
    ADD COLUMN prune_started_at timestamptz,
    ADD COLUMN pruned_at timestamptz,
    ADD CONSTRAINT deployments_pruned_after_started
        CHECK (pruned_at IS NULL OR prune_started_at IS NOT NULL),
    ADD CONSTRAINT deployments_active_never_pruned
        CHECK (NOT (is_active AND prune_started_at IS NOT NULL));
