//! The SQLite user store's hot reads (account entities by id and by name), run on the calling
//! thread by [`agora_store::lite`] with no per-statement thread hop.

use std::collections::HashMap;
use std::sync::LazyLock;

use agora_store::lite::id_list;
use rusqlite::{Connection, OptionalExtension as _, Row};

use super::sql::{ACCOUNT_COLUMNS, AccountRow};
use crate::domain::Account;

static BY_IDS: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id IN (SELECT value FROM json_each(?1))"));
static BY_ID: LazyLock<String> = LazyLock::new(|| format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"));
static BY_NAME: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username_lower = ?1"));

fn account(r: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account::from(AccountRow {
        id: r.get(0)?,
        username: r.get(1)?,
        email: r.get(2)?,
        display_name: r.get(3)?,
        note: r.get(4)?,
        avatar_url: r.get(5)?,
        header_url: r.get(6)?,
        locked: r.get(7)?,
        bot: r.get(8)?,
        fields_json: r.get(9)?,
        role: r.get(10)?,
        privacy: r.get(11)?,
        sensitive: r.get(12)?,
        language: r.get(13)?,
        created_at_ms: r.get(14)?,
        updated_at_ms: r.get(15)?,
    }))
}

/// Accounts in the order of `ids`, unknown ones left out.
pub fn accounts(c: &Connection, ids: &[i64]) -> rusqlite::Result<Vec<Account>> {
    let mut st = c.prepare_cached(&BY_IDS)?;
    let mut by_id: HashMap<i64, Account> =
        st.query_map([id_list(ids)], account)?.map(|r| r.map(|a| (a.id, a))).collect::<Result<_, _>>()?;
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

pub fn by_id(c: &Connection, id: i64) -> rusqlite::Result<Option<Account>> {
    c.prepare_cached(&BY_ID)?.query_row([id], account).optional()
}

pub fn by_username(c: &Connection, username_lower: &str) -> rusqlite::Result<Option<Account>> {
    c.prepare_cached(&BY_NAME)?.query_row([username_lower], account).optional()
}
