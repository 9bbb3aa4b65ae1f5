-- Serving state and last update status (seed 001), beside the lifecycle status of seed 000, and
-- what digest verification found.

ALTER TABLE functions
    ADD COLUMN state text NOT NULL DEFAULT 'Pending'
        CHECK (state IN ('Pending', 'Active', 'Failed', 'Inactive')),
    ADD COLUMN state_reason text,
    ADD COLUMN last_update_status text
        CHECK (last_update_status IN ('InProgress', 'Successful', 'Failed')),
    ADD COLUMN last_update_status_reason text,
    -- What to do when the recorded tag was moved to another digest while the recorded digest still
    -- exists: keep serving the recorded digest (and report the drift), or fail as seed 001 does.
    ADD COLUMN on_tag_overwrite text NOT NULL DEFAULT 'keep'
        CHECK (on_tag_overwrite IN ('keep', 'fail')),
    -- The last drift found: {"tag", "recorded_digest", "current_digest", "detected_at"}; cleared
    -- when a new version or a rollback takes the traffic.
    ADD COLUMN image_drift jsonb,
    ADD COLUMN verified_at timestamptz;

-- Functions that already serve are Active with a successful last update.
UPDATE functions f SET state = 'Active', last_update_status = 'Successful'
WHERE EXISTS (SELECT 1 FROM deployments d WHERE d.function_id = f.id AND d.is_active);
UPDATE functions f SET last_update_status = 'InProgress'
WHERE EXISTS (
    SELECT 1 FROM deployments d
    WHERE d.function_id = f.id AND d.status IN ('building', 'pushing', 'deploying')
);
