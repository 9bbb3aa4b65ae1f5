-- The retention sweep deletes by age, a bounded batch per tick: it needs to find the oldest rows
-- without reading the tables.
CREATE INDEX invocation_events_by_age ON invocation_events (created_at);
CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (received_at);
CREATE INDEX deployment_logs_by_age ON deployment_logs (created_at);
