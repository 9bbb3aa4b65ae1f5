-- The cron scheduler: what its sweeps read and mark, and one row per fired tick.

-- Written by the invocation proxy at most every few seconds per function (see the api).
ALTER TABLE functions
    ADD COLUMN last_invoked_at timestamptz,
    -- When a sweep last enqueued work for the function, so running a sweep twice enqueues
    -- nothing new while that work is pending.
    ADD COLUMN verify_enqueued_at timestamptz,
    ADD COLUMN release_enqueued_at timestamptz;

-- A per-user override of SLIPWAY_DEFAULT_FUNCTION_QUOTA; operators may list and fire schedules.
ALTER TABLE users
    ADD COLUMN function_quota integer CHECK (function_quota >= 0),
    ADD COLUMN operator boolean NOT NULL DEFAULT false;

ALTER TABLE pending_deletions ADD COLUMN purge_enqueued_at timestamptz;

-- Exactly one replica fires each tick: the one whose INSERT of (sweep, fire_at) succeeds, in
-- the transaction that runs the sweep. A replica that dies mid-sweep rolls its claim back.
CREATE TABLE scheduler_ticks (
    sweep       text NOT NULL,
    fire_at     timestamptz NOT NULL,
    fired_by    text NOT NULL,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    -- Set for a tick an operator asked for, rather than the cron expression.
    manual      boolean NOT NULL DEFAULT false,
    result      jsonb NOT NULL,
    PRIMARY KEY (sweep, fire_at)
);

-- The sweeps' access paths, so each stays an index range scan at a million functions.
CREATE INDEX functions_idle_candidates ON functions (COALESCE(last_invoked_at, updated_at))
    WHERE state = 'Active' AND status = 'active';
CREATE INDEX functions_stale_candidates ON functions (COALESCE(last_invoked_at, created_at))
    WHERE status IN ('init', 'active');
CREATE INDEX functions_verify_candidates ON functions (verify_enqueued_at NULLS FIRST)
    WHERE state = 'Active' AND status = 'active';
CREATE INDEX functions_by_owner_live ON functions (owner_id)
    WHERE status NOT IN ('pending_deletion', 'deleted');
