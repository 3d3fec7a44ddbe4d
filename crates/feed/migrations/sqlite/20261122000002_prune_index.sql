-- Handled-event records and trend inputs older than the trend window are pruned hourly.
CREATE INDEX processed_events_by_time ON processed_events (processed_at_ms);
