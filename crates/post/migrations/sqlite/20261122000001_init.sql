-- Statuses (posts, replies, reblogs) and everything hanging off them.
CREATE TABLE statuses (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    text TEXT NOT NULL,
    content TEXT NOT NULL,
    spoiler_text TEXT NOT NULL,
    sensitive BOOLEAN NOT NULL,
    visibility TEXT NOT NULL,
    language TEXT NOT NULL,
    in_reply_to_id BIGINT,
    in_reply_to_account_id BIGINT,
    reblog_of_id BIGINT,
    replies_count BIGINT NOT NULL DEFAULT 0,
    reblogs_count BIGINT NOT NULL DEFAULT 0,
    favourites_count BIGINT NOT NULL DEFAULT 0,
    edited_at_ms BIGINT,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    deleted_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    application_name TEXT NOT NULL,
    idempotency_key TEXT
);
CREATE UNIQUE INDEX statuses_idempotency ON statuses (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- One reblog per account and original; an undone reblog is deleted, not flagged.
CREATE UNIQUE INDEX statuses_one_reblog ON statuses (account_id, reblog_of_id) WHERE reblog_of_id IS NOT NULL;
CREATE INDEX statuses_by_account ON statuses (account_id, id);
CREATE INDEX statuses_by_parent ON statuses (in_reply_to_id) WHERE in_reply_to_id IS NOT NULL;
CREATE INDEX statuses_by_original ON statuses (reblog_of_id, id) WHERE reblog_of_id IS NOT NULL;

CREATE TABLE status_mentions (
    status_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    username TEXT NOT NULL,
    PRIMARY KEY (status_id, account_id)
);

CREATE TABLE status_tags (
    status_id BIGINT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (status_id, tag)
);
CREATE INDEX status_tags_by_tag ON status_tags (tag, status_id);

CREATE TABLE status_edits (
    id BIGINT PRIMARY KEY,
    status_id BIGINT NOT NULL,
    content TEXT NOT NULL,
    spoiler_text TEXT NOT NULL,
    sensitive BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX status_edits_by_status ON status_edits (status_id, id);

CREATE TABLE favourites (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    status_id BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (account_id, status_id)
);
CREATE INDEX favourites_by_status ON favourites (status_id, id);

CREATE TABLE bookmarks (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    status_id BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (account_id, status_id)
);

CREATE TABLE pins (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    status_id BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (account_id, status_id)
);

CREATE TABLE reactions (
    id BIGINT PRIMARY KEY,
    status_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    emoji TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (status_id, account_id, emoji)
);

CREATE TABLE outbox (
    id BIGINT PRIMARY KEY,
    topic TEXT NOT NULL,
    envelope BLOB NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE processed_events (
    consumer TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    processed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
