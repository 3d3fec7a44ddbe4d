-- The graph store. Every relation row id is a snowflake that doubles as the pagination cursor.

CREATE TABLE follows (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    target_id BIGINT NOT NULL,
    show_reblogs BOOLEAN NOT NULL,
    notify BOOLEAN NOT NULL,
    -- Comma-separated ISO 639-1 codes; empty means every language.
    languages TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    UNIQUE (account_id, target_id)
);
CREATE INDEX follows_by_account ON follows (account_id, id);
CREATE INDEX follows_by_target ON follows (target_id, id);

CREATE TABLE follow_requests (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    target_id BIGINT NOT NULL,
    show_reblogs BOOLEAN NOT NULL,
    notify BOOLEAN NOT NULL,
    languages TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    UNIQUE (account_id, target_id)
);
CREATE INDEX follow_requests_by_account ON follow_requests (account_id, id);
CREATE INDEX follow_requests_by_target ON follow_requests (target_id, id);

CREATE TABLE blocks (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    target_id BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (account_id, target_id)
);
CREATE INDEX blocks_by_account ON blocks (account_id, id);
CREATE INDEX blocks_by_target ON blocks (target_id, id);

CREATE TABLE mutes (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    target_id BIGINT NOT NULL,
    notifications BOOLEAN NOT NULL,
    -- 0 means indefinitely; an expired mute counts as no mute.
    expires_at_ms BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (account_id, target_id)
);
CREATE INDEX mutes_by_account ON mutes (account_id, id);

CREATE TABLE suggestion_dismissals (
    account_id BIGINT NOT NULL,
    target_id BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, target_id)
);

CREATE TABLE outbox (
    id BIGINT PRIMARY KEY,
    topic TEXT NOT NULL,
    envelope BLOB NOT NULL,
    created_at_ms BIGINT NOT NULL
);
