-- Failed sign-ins per throttle key (an account, an account from an address it signed in from
-- before, or a login name that matches no account), for the backoff on password guessing.
CREATE TABLE login_failures (
    throttle_key TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_failure_at_ms BIGINT NOT NULL
);

-- Addresses an account signed in from successfully: their failures are counted apart, so that
-- guessing from elsewhere never slows the owner down at home.
CREATE TABLE login_addresses (
    account_id BIGINT NOT NULL,
    address TEXT NOT NULL,
    last_success_at_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, address)
);
