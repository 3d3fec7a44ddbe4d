-- One row per notification. The cause (recipient, type, actor, status) is unique: a redelivered
-- or repeated cause never notifies twice, and undoing it (an unfavourite) finds its row.
CREATE TABLE notifications (
    id BIGINT PRIMARY KEY,
    recipient_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    account_id BIGINT NOT NULL,
    status_id BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (recipient_id, kind, account_id, status_id)
);
CREATE INDEX notifications_by_recipient ON notifications (recipient_id, id);
CREATE INDEX notifications_by_status ON notifications (status_id) WHERE status_id <> 0;
CREATE INDEX notifications_by_actor ON notifications (account_id, recipient_id);

-- Whose actions do not notify whom, kept from graph events: a block either way, or a mute that
-- covers notifications (until it expires; 0 is never).
CREATE TABLE suppressions (
    recipient_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    reason TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (recipient_id, account_id, reason)
);

CREATE TABLE processed_events (
    event_id BIGINT PRIMARY KEY,
    processed_at_ms BIGINT NOT NULL
);
CREATE INDEX processed_events_by_time ON processed_events (processed_at_ms);
