//! agora-store on real engines: units of work cancelled at every point of their life leave no
//! connection inside a transaction and never half a unit, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use rand::Rng as _;

/// One unit: an item and the counter that counts items, in one transaction.
macro_rules! unit {
    ($pool:expr, $begin:expr) => {
        async {
            let mut tx = agora_store::begin($pool, $begin).await?;
            sqlx::query("INSERT INTO items (note) VALUES ('x')").execute(&mut *tx).await?;
            sqlx::query("UPDATE counter SET n = n + 1").execute(&mut *tx).await?;
            agora_store::commit(tx).await
        }
    };
}

/// Polls `fut` `polls` times (letting I/O progress in between) and drops it unfinished.
async fn cancel_after<F: std::future::Future>(fut: F, polls: usize) {
    let mut fut = std::pin::pin!(fut);
    for _ in 0..polls {
        if futures::poll!(fut.as_mut()).is_ready() {
            return;
        }
        // Long enough for the server to answer what was sent: the dangerous moment is a
        // statement executed whose answer nobody read.
        let pause = rand::rng().random_range(1_000..3_000);
        tokio::time::sleep(Duration::from_micros(pause)).await;
    }
}

/// (items, counter): equal when no unit was ever half-applied.
macro_rules! consistent {
    ($pool:expr) => {{
        let (items,): (i64,) = sqlx::query_as("SELECT count(*) FROM items").fetch_one($pool).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT n FROM counter").fetch_one($pool).await.unwrap();
        (items, n)
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_units_of_work_leave_clean_connections_on_postgres() {
    let Some(admin) = agora_testkit::test_server("AGORA_TEST_POSTGRES_URL") else { return };
    let url = agora_testkit::fresh_postgres_database(&admin).await.unwrap();
    let pool = agora_store::postgres(&url).await.unwrap();
    sqlx::query("CREATE TABLE items (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)").execute(&pool).await.unwrap();
    sqlx::query("CREATE TABLE counter (n BIGINT NOT NULL)").execute(&pool).await.unwrap();
    sqlx::query("INSERT INTO counter VALUES (0)").execute(&pool).await.unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let mut observer = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    for polls in 1..16 {
        cancel_after(unit!(&pool, "BEGIN"), polls).await;
        // Give the pool time to take the connection back, then look at every session.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let stuck: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
        )
        .bind(&db)
        .fetch_one(&mut observer)
        .await
        .unwrap();
        assert_eq!(stuck, 0, "cancelled after {polls} polls: a pooled connection was left inside a transaction");
    }
    // Every connection of the pool, all at once, runs a unit to completion.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move { unit!(&pool, "BEGIN").await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (items, n) = consistent!(&pool);
    assert_eq!(items, n, "an item without its count, or a count without its item");
    assert!(n >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_units_of_work_leave_clean_connections_on_sqlite() {
    let dir = agora_testkit::tempdir().unwrap();
    let pool = agora_store::sqlite(&format!("sqlite://{}/t.db", dir.0.display())).await.unwrap();
    sqlx::query("CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT NOT NULL)").execute(&pool).await.unwrap();
    sqlx::query("CREATE TABLE counter (n BIGINT NOT NULL)").execute(&pool).await.unwrap();
    sqlx::query("INSERT INTO counter VALUES (0)").execute(&pool).await.unwrap();
    for polls in 1..16 {
        cancel_after(unit!(&pool, "BEGIN IMMEDIATE"), polls).await;
    }
    // A connection left holding the write lock would make these wait out the busy timeout and fail.
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move { unit!(&pool, "BEGIN IMMEDIATE").await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(4), "writers waited on a lock nobody releases");
    let (items, n) = consistent!(&pool);
    assert_eq!(items, n, "an item without its count, or a count without its item");
    assert!(n >= 16);
}

/// The inline reader sees every write the pool has committed, sees nothing of a transaction still
/// open, refuses to write, and serves many threads at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_sqlite_reads_see_committed_writes_only_and_never_write() {
    let dir = agora_testkit::tempdir().unwrap();
    let url = format!("sqlite://{}/r.db", dir.0.display());
    let pool = agora_store::sqlite(&url).await.unwrap();
    sqlx::query("CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT NOT NULL)").execute(&pool).await.unwrap();
    let reader = std::sync::Arc::new(agora_store::lite::SqliteReader::new(&url, "test").unwrap());
    let count = |r: &agora_store::lite::SqliteReader| {
        r.read(|c| c.query_row("SELECT count(*) FROM items", [], |row| row.get::<_, i64>(0))).unwrap()
    };
    assert_eq!(count(&reader), 0);
    for i in 1..=20 {
        sqlx::query("INSERT INTO items (note) VALUES ('x')").execute(&pool).await.unwrap();
        assert_eq!(count(&reader), i, "a committed write was not visible to the next read");
    }

    let mut tx = agora_store::begin(&pool, "BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("INSERT INTO items (note) VALUES ('pending')").execute(&mut *tx).await.unwrap();
    assert_eq!(count(&reader), 20, "a read saw a write that was not committed");
    agora_store::commit(tx).await.unwrap();
    assert_eq!(count(&reader), 21);

    let refused = reader.read(|c| c.execute("INSERT INTO items (note) VALUES ('y')", []));
    assert!(refused.is_err(), "the reader wrote");
    let missing = reader.read(|c| c.query_row("SELECT id FROM items WHERE id = -1", [], |row| row.get::<_, i64>(0)));
    assert!(matches!(missing, Err(sqlx::Error::RowNotFound)));

    let ids = agora_store::lite::id_list(&[1, 3, 5, 999]);
    let found: Vec<i64> = reader
        .read(|c| {
            let mut st =
                c.prepare_cached("SELECT id FROM items WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id")?;
            st.query_map([&ids], |row| row.get(0))?.collect()
        })
        .unwrap();
    assert_eq!(found, vec![1, 3, 5]);

    let threads: Vec<_> = (0..8)
        .map(|_| {
            let reader = reader.clone();
            std::thread::spawn(move || (0..200).map(|_| count(&reader)).all(|n| n == 21))
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap(), "a concurrent read saw another count");
    }
}

/// The SQLite writer: units queued together commit together, yet each is all-or-nothing on its
/// own; a caller that stops waiting still gets its unit written whole; a returned write is seen
/// by the next read; and it shares the file with sqlx writers without losing either's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writer_units_are_atomic_alone_and_durable_together() {
    let dir = agora_testkit::tempdir().unwrap();
    let url = format!("sqlite://{}/w.db", dir.0.display());
    let pool = agora_store::sqlite(&url).await.unwrap();
    sqlx::query("CREATE TABLE items (id INTEGER PRIMARY KEY, unit INTEGER NOT NULL, note TEXT NOT NULL UNIQUE)")
        .execute(&pool)
        .await
        .unwrap();
    let writer = std::sync::Arc::new(agora_store::lite::SqliteWriter::new(&url, "test").unwrap());
    let reader = agora_store::lite::SqliteReader::new(&url, "test").unwrap();
    let count = |sql: &'static str| reader.read(|c| c.query_row(sql, [], |row| row.get::<_, i64>(0))).unwrap();

    // 200 units at once, every fifth failing on its second statement (a note already taken).
    sqlx::query("INSERT INTO items (unit, note) VALUES (-9, 'taken')").execute(&pool).await.unwrap();
    let units = (0..200i64).map(|u| {
        let writer = writer.clone();
        async move {
            writer
                .write(move |c| {
                    c.execute("INSERT INTO items (unit, note) VALUES (?1, ?2)", (u, format!("a{u}")))?;
                    let second = if u % 5 == 0 { "taken".to_owned() } else { format!("b{u}") };
                    c.execute("INSERT INTO items (unit, note) VALUES (?1, ?2)", (u, second))?;
                    Ok(u)
                })
                .await
        }
    });
    let results = futures::future::join_all(units).await;
    for (u, r) in results.iter().enumerate() {
        assert_eq!(r.is_ok(), u % 5 != 0, "unit {u}: {r:?}");
    }
    assert_eq!(
        count("SELECT count(*) FROM items WHERE unit >= 0"),
        160 * 2,
        "a failed unit left a row, or a good one lost one"
    );
    assert_eq!(count("SELECT count(*) FROM items WHERE unit % 5 = 0"), 0);

    // Read your write: the next read after a returned write sees it.
    for i in 0..50i64 {
        writer
            .write(move |c| c.execute("INSERT INTO items (unit, note) VALUES (-1, ?1)", [format!("r{i}")]))
            .await
            .unwrap();
        assert_eq!(count("SELECT count(*) FROM items WHERE unit = -1"), i + 1);
    }

    // A caller that gives up does not cut its unit in half.
    let slow = writer.write(|c| {
        for i in 0..500 {
            c.execute("INSERT INTO items (unit, note) VALUES (-2, ?1)", [format!("c{i}")])?;
        }
        Ok(())
    });
    cancel_after(slow, 1).await;
    writer.write(|_| Ok(())).await.unwrap();
    assert_eq!(count("SELECT count(*) FROM items WHERE unit = -2"), 500);

    // sqlx writers on the same file wait for the writer (and the writer for them); nothing is lost.
    let sqlx_side = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                sqlx::query("INSERT INTO items (unit, note) VALUES (-3, ?)")
                    .bind(format!("s{i}"))
                    .execute(&pool)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        })
    };
    for i in 0..100i64 {
        writer
            .write(move |c| c.execute("INSERT INTO items (unit, note) VALUES (-4, ?1)", [format!("w{i}")]))
            .await
            .unwrap();
    }
    sqlx_side.await.unwrap().unwrap();
    assert_eq!(count("SELECT count(*) FROM items WHERE unit IN (-3, -4)"), 200);
}
