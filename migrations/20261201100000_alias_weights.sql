-- Traffic splitting, as Lambda's routing config: an alias may send a share of its calls to one
-- other version (`weights: {"<version>": share}`), drawn per call.
ALTER TABLE function_aliases
    ADD COLUMN additional_deployment_id uuid REFERENCES deployments (id) ON DELETE CASCADE,
    ADD COLUMN additional_weight double precision,
    ADD CONSTRAINT function_aliases_weights CHECK (
        (additional_deployment_id IS NULL) = (additional_weight IS NULL)
        AND (additional_weight IS NULL OR (additional_weight > 0 AND additional_weight < 1))
        AND additional_deployment_id IS DISTINCT FROM deployment_id
    );

CREATE INDEX function_aliases_additional_deployment ON function_aliases (additional_deployment_id)
    WHERE additional_deployment_id IS NOT NULL;
