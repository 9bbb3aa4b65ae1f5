-- Tenant isolation: what one instance of a function may use. NULL limits take the operator's
-- default (SLIPWAY_FUNCTION_*), so changing a default reaches every function that did not ask.
ALTER TABLE functions
    ADD COLUMN memory_mb integer CHECK (memory_mb > 0),
    ADD COLUMN cpu_millis integer CHECK (cpu_millis > 0),
    ADD COLUMN pids integer CHECK (pids > 0),
    -- A read-only root filesystem (with a writable /tmp) unless the function opts out.
    ADD COLUMN read_only_root boolean NOT NULL DEFAULT true;
