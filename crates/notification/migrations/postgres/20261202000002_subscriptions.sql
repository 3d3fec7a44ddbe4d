-- Followers who asked to hear of an account's new statuses (Mastodon's `notify`), from graph
-- events.
CREATE TABLE subscriptions (
    target_id BIGINT NOT NULL,
    follower_id BIGINT NOT NULL,
    PRIMARY KEY (target_id, follower_id)
);
CREATE INDEX subscriptions_by_follower ON subscriptions (follower_id);

-- Who reblogged, favourited or replied to a status, from post events: they hear of its edits.
CREATE TABLE interactions (
    status_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (status_id, account_id, kind)
);
