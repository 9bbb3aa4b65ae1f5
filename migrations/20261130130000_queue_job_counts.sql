-- Jobs by queue and state, kept as the jobs change, so the operators' overview and the metrics
-- scrape never count a table of millions of rows. Each statement that inserts, deletes or
-- changes the status of jobs appends its net change to `queue_job_count_deltas` (an insert
-- without a key: writers never wait on each other, not even a deploy whose transaction holds
-- its job while the archive uploads). Readers add the folded counts and the deltas not folded
-- yet; `fold_queue_job_counts()` moves deltas into the counts (the reap sweep calls it every
-- 30 s, and each overview read).
-- The functions keep the search_path they were made with: they fire inside apalis' statements,
-- whatever those set.
CREATE TABLE queue_job_counts (
    queue text NOT NULL,
    state text NOT NULL,
    jobs bigint NOT NULL,
    PRIMARY KEY (queue, state)
);

CREATE TABLE queue_job_count_deltas (
    queue text NOT NULL,
    state text NOT NULL,
    delta bigint NOT NULL
);

CREATE FUNCTION count_inserted_jobs() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO queue_job_count_deltas (queue, state, delta)
    SELECT job_type, status, count(*) FROM inserted_jobs GROUP BY job_type, status;
    RETURN NULL;
END
$$;

CREATE FUNCTION count_deleted_jobs() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO queue_job_count_deltas (queue, state, delta)
    SELECT job_type, status, -count(*) FROM deleted_jobs GROUP BY job_type, status;
    RETURN NULL;
END
$$;

-- Most updates (a heartbeat, a lock) leave the status alone and add nothing.
CREATE FUNCTION count_updated_jobs() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO queue_job_count_deltas (queue, state, delta)
    SELECT queue, state, sum(delta)
    FROM (SELECT o.job_type AS queue, o.status AS state, -1 AS delta
          FROM old_jobs o JOIN new_jobs n ON n.id = o.id
          WHERE (o.job_type, o.status) IS DISTINCT FROM (n.job_type, n.status)
          UNION ALL
          SELECT n.job_type, n.status, 1
          FROM old_jobs o JOIN new_jobs n ON n.id = o.id
          WHERE (o.job_type, o.status) IS DISTINCT FROM (n.job_type, n.status)) AS moved
    GROUP BY queue, state;
    RETURN NULL;
END
$$;

CREATE FUNCTION forget_job_counts() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM queue_job_count_deltas;
    DELETE FROM queue_job_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER count_inserted_jobs AFTER INSERT ON apalis.jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_jobs();
CREATE TRIGGER count_deleted_jobs AFTER DELETE ON apalis.jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION count_deleted_jobs();
CREATE TRIGGER count_updated_jobs AFTER UPDATE ON apalis.jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION count_updated_jobs();
CREATE TRIGGER forget_job_counts AFTER TRUNCATE ON apalis.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION forget_job_counts();

-- One fold at a time; a second caller skips (the first one's result is as good).
CREATE FUNCTION fold_queue_job_counts() RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('slipway.queue_job_counts')) THEN
        RETURN;
    END IF;
    WITH folded AS (DELETE FROM queue_job_count_deltas RETURNING queue, state, delta)
    INSERT INTO queue_job_counts AS c (queue, state, jobs)
    SELECT queue, state, sum(delta) FROM folded GROUP BY queue, state
    ON CONFLICT (queue, state) DO UPDATE SET jobs = c.jobs + EXCLUDED.jobs;
END
$$;

-- The triggers exist before the jobs are counted, and hold off writers until this commits: no
-- change is counted twice or missed.
INSERT INTO queue_job_counts (queue, state, jobs)
SELECT job_type, status, count(*) FROM apalis.jobs GROUP BY job_type, status;

-- The overview's "finished in the last 5 minutes" reads only the recent rows.
CREATE INDEX apalis_jobs_done_at ON apalis.jobs (done_at);
-- The job list, newest first: within a queue and a state (a rare pair, such as a queue's failed
-- jobs, is read straight off this one), and over everything (any other filter is checked on the
-- newest rows until the page is full).
CREATE INDEX apalis_jobs_by_queue_state_run_at ON apalis.jobs (job_type, status, run_at DESC, id DESC);
CREATE INDEX apalis_jobs_by_run_at ON apalis.jobs (run_at DESC, id DESC);
