-- Mastodon conversations: per account, the direct statuses of one thread with one set of other
-- accounts (participants: their ids ascending, space separated; '' for a message to oneself).
-- The id is the id of the status that began the conversation for this account.
CREATE TABLE conversations (
    account_id BIGINT NOT NULL,
    id BIGINT NOT NULL,
    thread_id BIGINT NOT NULL,
    participants TEXT NOT NULL,
    last_status_id BIGINT NOT NULL,
    last_author_id BIGINT NOT NULL,
    unread BOOLEAN NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE UNIQUE INDEX conversations_by_key ON conversations (account_id, thread_id, participants);
CREATE INDEX conversations_by_last ON conversations (account_id, last_status_id);

-- The statuses each conversation holds, so a delete finds them and the last one is known.
CREATE TABLE conversation_statuses (
    account_id BIGINT NOT NULL,
    conversation_id BIGINT NOT NULL,
    status_id BIGINT NOT NULL,
    author_id BIGINT NOT NULL,
    thread_id BIGINT NOT NULL,
    PRIMARY KEY (account_id, conversation_id, status_id)
);
CREATE INDEX conversation_statuses_by_status ON conversation_statuses (status_id);
