-- Each account's status count and newest status time, kept by triggers on every write to
-- statuses (insert, delete, marking deleted), so a page of accounts reads one row per account
-- instead of counting every status its authors ever wrote. Counted as before: statuses and
-- reblogs that are not deleted and not direct.
CREATE TABLE account_stats (
    account_id INTEGER PRIMARY KEY,
    statuses_count INTEGER NOT NULL,
    last_status_at_ms INTEGER
);

INSERT INTO account_stats (account_id, statuses_count, last_status_at_ms)
SELECT account_id, COUNT(*), MAX(created_at_ms) FROM statuses
WHERE deleted = FALSE AND visibility <> 'direct' GROUP BY account_id;

CREATE TRIGGER account_stats_on_insert AFTER INSERT ON statuses
WHEN NEW.deleted = FALSE AND NEW.visibility <> 'direct'
BEGIN
    INSERT INTO account_stats (account_id, statuses_count, last_status_at_ms)
    VALUES (NEW.account_id, 1, NEW.created_at_ms)
    ON CONFLICT (account_id) DO UPDATE SET
        statuses_count = statuses_count + 1,
        last_status_at_ms = MAX(COALESCE(last_status_at_ms, excluded.last_status_at_ms), excluded.last_status_at_ms);
END;

-- The newest remaining status after one goes (ids grow with time, so the first by id is it).
CREATE TRIGGER account_stats_on_delete AFTER DELETE ON statuses
WHEN OLD.deleted = FALSE AND OLD.visibility <> 'direct'
BEGIN
    UPDATE account_stats SET
        statuses_count = statuses_count - 1,
        last_status_at_ms = (SELECT created_at_ms FROM statuses
            WHERE account_id = OLD.account_id AND deleted = FALSE AND visibility <> 'direct' ORDER BY id DESC LIMIT 1)
    WHERE account_id = OLD.account_id;
END;

CREATE TRIGGER account_stats_on_mark_deleted AFTER UPDATE OF deleted ON statuses
WHEN OLD.deleted = FALSE AND NEW.deleted = TRUE AND OLD.visibility <> 'direct'
BEGIN
    UPDATE account_stats SET
        statuses_count = statuses_count - 1,
        last_status_at_ms = (SELECT created_at_ms FROM statuses
            WHERE account_id = OLD.account_id AND deleted = FALSE AND visibility <> 'direct' ORDER BY id DESC LIMIT 1)
    WHERE account_id = OLD.account_id;
END;
