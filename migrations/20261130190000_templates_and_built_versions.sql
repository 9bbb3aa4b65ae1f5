-- Functions from handler code (issue 18, seed 003): a function made with `POST /api/v1/functions`
-- records its template (which names its runtime) and its handler's source; a build wraps the
-- handler in the template and goes through the same pipeline as an upload. Its archive is stored
-- per version as for any deployment, so the source each version was built from stays known.
ALTER TABLE functions
    ADD COLUMN description text CHECK (length(description) <= 1024),
    ADD COLUMN template text CHECK (template IN ('node', 'python')),
    ADD COLUMN handler text CHECK (octet_length(handler) BETWEEN 1 AND 262144),
    ADD CONSTRAINT functions_template_has_a_handler CHECK ((template IS NULL) = (handler IS NULL));

-- Building and deploying as two steps: a deployment made by `POST /api/v1/functions/build/{id}`
-- is held: its pipeline stops at `built` (pushed, digest recorded, not serving) until
-- `POST /api/v1/functions/deploy/{id}` releases it to `deploying`.
ALTER TABLE deployments
    ADD COLUMN hold boolean NOT NULL DEFAULT false,
    DROP CONSTRAINT deployments_status_check,
    ADD CONSTRAINT deployments_status_check CHECK (status IN
        ('fetching', 'building', 'pushing', 'built', 'deploying', 'active', 'inactive', 'failed',
         'superseded')),
    ADD CONSTRAINT deployments_built_has_an_image CHECK (
        status <> 'built' OR (image_digest IS NOT NULL AND image_tag IS NOT NULL));
