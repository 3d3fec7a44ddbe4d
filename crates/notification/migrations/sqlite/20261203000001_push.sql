-- Web Push: one subscription per session of an access token, and the server's VAPID key.
CREATE TABLE push_subscriptions (
    account_id BIGINT NOT NULL,
    session_id BIGINT NOT NULL,
    id BIGINT NOT NULL,
    endpoint TEXT NOT NULL,
    p256dh TEXT NOT NULL,
    auth TEXT NOT NULL,
    standard BOOLEAN NOT NULL,
    alerts TEXT NOT NULL,
    policy TEXT NOT NULL,
    access_token TEXT NOT NULL,
    server_key TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, session_id)
);

CREATE TABLE vapid_keys (
    name TEXT PRIMARY KEY,
    private_key TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
