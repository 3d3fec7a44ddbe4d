-- The feed's tables are a derived view of post and graph events; all of it can be rebuilt.

-- The facts of every status seen, so timelines can be derived again and deletes find every copy.
-- A deleted status keeps its row as a tombstone so a redelivered post.created cannot revive it.
CREATE TABLE statuses (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    visibility TEXT NOT NULL,
    in_reply_to_id BIGINT NOT NULL DEFAULT 0,
    in_reply_to_account_id BIGINT NOT NULL DEFAULT 0,
    reblog_of_id BIGINT NOT NULL DEFAULT 0,
    reblog_of_account_id BIGINT NOT NULL DEFAULT 0,
    mention_ids TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '',
    has_media BOOLEAN NOT NULL DEFAULT FALSE,
    sensitive BOOLEAN NOT NULL DEFAULT FALSE,
    deleted BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX statuses_by_account ON statuses (account_id, id);

-- One row per status per timeline: home:<id>, public, tag:<name>, account:<id>.
CREATE TABLE entries (
    timeline TEXT NOT NULL,
    status_id BIGINT NOT NULL,
    author_id BIGINT NOT NULL,
    reblog_of_id BIGINT NOT NULL DEFAULT 0,
    reblog_of_author_id BIGINT NOT NULL DEFAULT 0,
    in_reply_to_account_id BIGINT NOT NULL DEFAULT 0,
    visibility TEXT NOT NULL,
    has_media BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (timeline, status_id)
);
CREATE INDEX entries_by_status ON entries (status_id);
CREATE INDEX entries_by_reblog ON entries (reblog_of_id) WHERE reblog_of_id <> 0;
CREATE INDEX entries_by_author ON entries (timeline, author_id);
CREATE INDEX entries_by_reblog_author ON entries (timeline, reblog_of_author_id) WHERE reblog_of_author_id <> 0;

-- Authors whose statuses are merged into homes at read time instead of fanned out.
CREATE TABLE large_accounts (
    account_id BIGINT PRIMARY KEY,
    followers BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE activity (
    account_id BIGINT PRIMARY KEY,
    last_active_ms BIGINT NOT NULL,
    needs_rebuild BOOLEAN NOT NULL DEFAULT FALSE
);

-- Follows made with reblogs hidden (graph.followed with show_reblogs = false).
CREATE TABLE hidden_reblogs (
    follower_id BIGINT NOT NULL,
    target_id BIGINT NOT NULL,
    PRIMARY KEY (target_id, follower_id)
);

CREATE TABLE markers (
    account_id BIGINT NOT NULL,
    timeline TEXT NOT NULL,
    last_read_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, timeline)
);

CREATE TABLE tag_uses (
    tag TEXT NOT NULL,
    status_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    used_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tag, status_id)
);
CREATE INDEX tag_uses_by_time ON tag_uses (used_at_ms);
CREATE INDEX tag_uses_by_status ON tag_uses (status_id);

-- Favourites and reblogs, for trending statuses.
CREATE TABLE engagements (
    status_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (status_id, account_id, kind)
);
CREATE INDEX engagements_by_time ON engagements (at_ms);

CREATE TABLE processed_events (
    consumer TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    processed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
