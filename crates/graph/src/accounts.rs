//! What the graph needs to know about an account it does not own: whether it exists and whether
//! it is locked (a follow becomes a request). The user service answers; tests use a fixed list.

use std::collections::HashMap;

use agora_kit::Error;
use agora_kit::grpc::Channel;
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use async_trait::async_trait;
use parking_lot::RwLock;

/// The few facts about an account the graph's rules depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountFacts {
    pub locked: bool,
}

#[async_trait]
pub trait AccountDirectory: Send + Sync + 'static {
    /// `None` when there is no such account. `token` is the caller's, forwarded as is.
    async fn account(&self, id: i64, token: Option<&str>) -> Result<Option<AccountFacts>, Error>;
}

/// Asks the user service.
pub struct UserServiceAccounts {
    client: UserServiceClient<Channel>,
}

impl UserServiceAccounts {
    pub fn new(client: UserServiceClient<Channel>) -> Self {
        Self { client }
    }
}

#[async_trait]
impl AccountDirectory for UserServiceAccounts {
    async fn account(&self, id: i64, token: Option<&str>) -> Result<Option<AccountFacts>, Error> {
        let mut client = self.client.clone();
        match client.get_account(agora_kit::grpc::request(pb::GetAccountRequest { id }, token)).await {
            Ok(resp) => Ok(resp.into_inner().account.map(|a| AccountFacts { locked: a.locked })),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(Error::from(status)),
        }
    }
}

/// A fixed set of accounts, for tests and in-process compositions that know them up front.
#[derive(Debug, Default)]
pub struct KnownAccounts {
    accounts: RwLock<HashMap<i64, AccountFacts>>,
}

impl KnownAccounts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an account.
    pub fn insert(&self, id: i64, facts: AccountFacts) {
        self.accounts.write().insert(id, facts);
    }
}

#[async_trait]
impl AccountDirectory for KnownAccounts {
    async fn account(&self, id: i64, _token: Option<&str>) -> Result<Option<AccountFacts>, Error> {
        Ok(self.accounts.read().get(&id).copied())
    }
}
