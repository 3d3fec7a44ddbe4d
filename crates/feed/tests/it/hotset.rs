//! The hot-set conformance suite: in memory and on Redis (`AGORA_TEST_REDIS_URL`). Capacity 5.
//! A hot page is answered only when it is provably what the store would answer.

use std::sync::Arc;

use agora_feed::domain::Window;
use agora_feed::hotset::{self, HotEntry, HotSet};

const CAPACITY: usize = 5;

/// A fresh account per case, so cases sharing one Redis never meet.
fn account() -> i64 {
    (rand::random::<u32>() as i64) + 1
}

fn e(id: i64) -> HotEntry {
    HotEntry { status_id: id, author_id: id % 7, reblog_of_author_id: if id % 2 == 0 { 3 } else { 0 } }
}

fn ids(page: Option<Vec<HotEntry>>) -> Option<Vec<i64>> {
    page.map(|p| p.into_iter().map(|e| e.status_id).collect())
}

fn desc(limit: usize) -> Window {
    Window::newest(limit)
}

async fn cold_until_filled(h: Arc<dyn HotSet>) {
    let a = account();
    assert_eq!(ids(h.page(a, &desc(3)).await.unwrap()), None);
    h.insert(a, &[e(10)]).await.unwrap();
    assert_eq!(ids(h.page(a, &desc(3)).await.unwrap()), None, "an insert alone does not warm a home");
    // The fill raced with that insert and missed it: the union keeps both.
    h.fill(a, &[e(9), e(8)], true).await.unwrap();
    let got = h.page(a, &desc(3)).await.unwrap().unwrap();
    assert_eq!(got, vec![e(10), e(9), e(8)], "entries keep their authors");
}

async fn complete_homes_answer_short_pages(h: Arc<dyn HotSet>) {
    let a = account();
    h.fill(a, &[], true).await.unwrap();
    assert_eq!(ids(h.page(a, &desc(20)).await.unwrap()), Some(vec![]));
    h.insert(a, &[e(1), e(2), e(3)]).await.unwrap();
    assert_eq!(ids(h.page(a, &desc(20)).await.unwrap()), Some(vec![3, 2, 1]));
    let older = Window { upper: Some(3), ..desc(20) };
    assert_eq!(ids(h.page(a, &older).await.unwrap()), Some(vec![2, 1]));
    let newer = Window { lower: Some(1), ascending: true, ..desc(1) };
    assert_eq!(ids(h.page(a, &newer).await.unwrap()), Some(vec![2]));
}

async fn trimmed_homes_answer_only_what_they_cover(h: Arc<dyn HotSet>) {
    let a = account();
    h.fill(a, &[e(1), e(2), e(3)], true).await.unwrap();
    h.insert(a, &[e(4), e(5), e(6), e(7)]).await.unwrap();
    // Capacity 5: ids 3..=7 remain; the home is no longer complete.
    assert_eq!(ids(h.page(a, &desc(5)).await.unwrap()), Some(vec![7, 6, 5, 4, 3]));
    assert_eq!(ids(h.page(a, &desc(2)).await.unwrap()), Some(vec![7, 6]));
    let older = Window { upper: Some(4), ..desc(3) };
    assert_eq!(ids(h.page(a, &older).await.unwrap()), None, "ids below 3 may exist in the store");
    let above = Window { lower: Some(4), ..desc(10) };
    assert_eq!(ids(h.page(a, &above).await.unwrap()), Some(vec![7, 6, 5]));
    let up_from_old = Window { lower: Some(1), ascending: true, ..desc(2) };
    assert_eq!(ids(h.page(a, &up_from_old).await.unwrap()), None);
    let up_from_covered = Window { lower: Some(5), ascending: true, ..desc(10) };
    assert_eq!(ids(h.page(a, &up_from_covered).await.unwrap()), Some(vec![6, 7]));
}

async fn a_fill_keeps_only_the_newest(h: Arc<dyn HotSet>) {
    let a = account();
    let many: Vec<HotEntry> = (1..=8).map(e).collect();
    h.fill(a, &many, false).await.unwrap();
    assert_eq!(ids(h.page(a, &desc(10)).await.unwrap()), None, "not complete and short");
    assert_eq!(ids(h.page(a, &desc(5)).await.unwrap()), Some(vec![8, 7, 6, 5, 4]));
}

async fn removals_and_forgetting(h: Arc<dyn HotSet>) {
    let a = account();
    h.fill(a, &[e(1), e(2), e(3)], true).await.unwrap();
    h.remove(a, &[2, 99]).await.unwrap();
    assert_eq!(ids(h.page(a, &desc(10)).await.unwrap()), Some(vec![3, 1]));
    h.forget(a).await.unwrap();
    assert_eq!(ids(h.page(a, &desc(10)).await.unwrap()), None);
    assert_eq!(h.capacity(), CAPACITY);
    h.ping().await.unwrap();
}

async fn large_ids_keep_their_order(h: Arc<dyn HotSet>) {
    let a = account();
    // Snowflake ids need all 63 bits: no float scores may round them.
    let big = [i64::MAX - 2, i64::MAX - 1, 1 << 60];
    h.fill(a, &big.map(e), true).await.unwrap();
    assert_eq!(ids(h.page(a, &desc(10)).await.unwrap()), Some(vec![i64::MAX - 1, i64::MAX - 2, 1 << 60]));
    let below = Window { upper: Some(i64::MAX - 1), ..desc(10) };
    assert_eq!(ids(h.page(a, &below).await.unwrap()), Some(vec![i64::MAX - 2, 1 << 60]));
}

async fn authors_come_back_exactly(h: Arc<dyn HotSet>) {
    // Filters drop entries by author: an author id that came back wrong would show a blocked
    // account's status. Ids use all 63 bits; two homes share authors; 0 means "not a reblog".
    let (a, b) = (account(), account());
    let author = |n: i64| (1 << 62) + n;
    let entry =
        |id: i64, by: i64, reblogged: i64| HotEntry { status_id: id, author_id: by, reblog_of_author_id: reblogged };
    let home_a = [entry(1, author(1), 0), entry(2, author(2), author(1)), entry(3, i64::MAX, 0)];
    let home_b = [entry(4, author(2), 0), entry(5, author(3), author(2))];
    h.fill(a, &home_a, true).await.unwrap();
    h.fill(b, &home_b, true).await.unwrap();
    h.insert(a, &[entry(6, author(3), author(2))]).await.unwrap();
    let got_a = h.page(a, &desc(10)).await.unwrap().unwrap();
    assert_eq!(got_a, vec![entry(6, author(3), author(2)), home_a[2], home_a[1], home_a[0]]);
    let got_b = h.page(b, &desc(10)).await.unwrap().unwrap();
    assert_eq!(got_b, vec![home_b[1], home_b[0]]);
}

async fn memory() -> Option<Arc<dyn HotSet>> {
    Some(hotset::connect("memory://", CAPACITY).await.unwrap())
}

async fn redis() -> Option<Arc<dyn HotSet>> {
    let url = agora_testkit::test_server("AGORA_TEST_REDIS_URL")?;
    Some(hotset::connect(&url, CAPACITY).await.unwrap())
}

agora_testkit::conformance!(
    backends: [memory, redis],
    cases: [
        cold_until_filled,
        complete_homes_answer_short_pages,
        trimmed_homes_answer_only_what_they_cover,
        a_fill_keeps_only_the_newest,
        removals_and_forgetting,
        large_ids_keep_their_order,
        authors_come_back_exactly,
    ]
);
