-- Timeline entries stored in primary-key order (WITHOUT ROWID): the entries of one timeline sit
-- together, so a page or a hot-set fill reads a few adjacent pages instead of one table lookup
-- per entry. Same columns and indexes as before.
CREATE TABLE entries_clustered (
    timeline TEXT NOT NULL,
    status_id BIGINT NOT NULL,
    author_id BIGINT NOT NULL,
    reblog_of_id BIGINT NOT NULL DEFAULT 0,
    reblog_of_author_id BIGINT NOT NULL DEFAULT 0,
    in_reply_to_account_id BIGINT NOT NULL DEFAULT 0,
    visibility TEXT NOT NULL,
    has_media BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (timeline, status_id)
) WITHOUT ROWID;
INSERT INTO entries_clustered (timeline, status_id, author_id, reblog_of_id, reblog_of_author_id,
    in_reply_to_account_id, visibility, has_media)
SELECT timeline, status_id, author_id, reblog_of_id, reblog_of_author_id, in_reply_to_account_id, visibility,
    has_media
FROM entries;
DROP TABLE entries;
ALTER TABLE entries_clustered RENAME TO entries;
CREATE INDEX entries_by_status ON entries (status_id);
CREATE INDEX entries_by_reblog ON entries (reblog_of_id) WHERE reblog_of_id <> 0;
CREATE INDEX entries_by_author ON entries (timeline, author_id);
CREATE INDEX entries_by_reblog_author ON entries (timeline, reblog_of_author_id) WHERE reblog_of_author_id <> 0;
