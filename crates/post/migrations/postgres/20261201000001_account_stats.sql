-- Each account's status count and newest status time, kept by a trigger on every write to
-- statuses (insert, delete, marking deleted), so a page of accounts reads one row per account
-- instead of counting every status its authors ever wrote. Counted as before: statuses and
-- reblogs that are not deleted and not direct.
CREATE TABLE account_stats (
    account_id BIGINT PRIMARY KEY,
    statuses_count BIGINT NOT NULL,
    last_status_at_ms BIGINT
);

INSERT INTO account_stats (account_id, statuses_count, last_status_at_ms)
SELECT account_id, COUNT(*), MAX(created_at_ms) FROM statuses
WHERE deleted = FALSE AND visibility <> 'direct' GROUP BY account_id;

CREATE FUNCTION account_stats_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.deleted = FALSE AND NEW.visibility <> 'direct' THEN
            INSERT INTO account_stats (account_id, statuses_count, last_status_at_ms)
            VALUES (NEW.account_id, 1, NEW.created_at_ms)
            ON CONFLICT (account_id) DO UPDATE SET
                statuses_count = account_stats.statuses_count + 1,
                last_status_at_ms = GREATEST(account_stats.last_status_at_ms, EXCLUDED.last_status_at_ms);
        END IF;
    ELSIF OLD.deleted = FALSE AND OLD.visibility <> 'direct' AND (TG_OP = 'DELETE' OR NEW.deleted = TRUE) THEN
        -- The newest remaining status after one goes (ids grow with time, so the first by id).
        UPDATE account_stats SET
            statuses_count = statuses_count - 1,
            last_status_at_ms = (SELECT s.created_at_ms FROM statuses s
                WHERE s.account_id = OLD.account_id AND s.deleted = FALSE AND s.visibility <> 'direct'
                ORDER BY s.id DESC LIMIT 1)
        WHERE account_id = OLD.account_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER account_stats_track AFTER INSERT OR DELETE OR UPDATE OF deleted ON statuses
FOR EACH ROW EXECUTE FUNCTION account_stats_track();
