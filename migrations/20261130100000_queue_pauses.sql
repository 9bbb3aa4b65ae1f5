-- Paused queues (`POST /api/ops/queues/{name}/pause`). apalis-postgres has no queue-wide pause:
-- a paused queue's waiting jobs are parked in status 'Paused', which no worker claims, and a
-- trigger parks every job of it that becomes due meanwhile (a new one, an operator's retry, an
-- orphan re-enqueued after its worker died). Resuming puts them back to 'Pending'. Jobs already
-- claimed or running go on.
CREATE TABLE queue_pauses (
    queue text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by uuid NOT NULL REFERENCES users (id)
);

-- A job coming due takes a shared lock that pausing and resuming take exclusively: it waits for a
-- pause or resume in progress and then sees it, so none slips through the instant one commits.
CREATE FUNCTION park_jobs_of_paused_queues() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'Pending' THEN
        PERFORM pg_advisory_xact_lock_shared(hashtext('slipway.queue_pauses'));
        IF EXISTS (SELECT 1 FROM queue_pauses WHERE queue = NEW.job_type) THEN
            NEW.status := 'Paused';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER park_jobs_of_paused_queues BEFORE INSERT OR UPDATE OF status ON apalis.jobs
    FOR EACH ROW EXECUTE FUNCTION park_jobs_of_paused_queues();
