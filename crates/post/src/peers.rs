//! What the post service asks of other services, behind traits so the rules can be tested with
//! in-memory fakes: the user directory (who is `@name`?) and the social graph (does the viewer
//! follow the author, is there a block?). The gRPC implementations live here too.

use std::collections::HashMap;

use agora_client::Caller;
use agora_client::graph_facts::GraphFacts;
use agora_kit::grpc::Channel;
use agora_kit::{Error, ErrorKind};
use agora_proto::user::v1 as user_pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use async_trait::async_trait;

use crate::domain::Relation;

/// A local account found by username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub account_id: i64,
    /// The canonical spelling.
    pub username: String,
}

/// Resolves local usernames to accounts.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The accounts among `usernames` (lower-cased) that exist; unknown names are left out.
    async fn lookup(&self, usernames: &[String]) -> Result<Vec<DirectoryEntry>, Error>;
}

/// The viewer's relations to authors, for the visibility rule.
#[async_trait]
pub trait Relations: Send + Sync + 'static {
    /// The relation of `viewer` to each of `account_ids`, in one call. Ids missing from the
    /// answer have no relation.
    async fn relations(&self, viewer: &Caller, account_ids: &[i64]) -> Result<HashMap<i64, Relation>, Error>;
}

/// [`Directory`] over the user service's `LookupAccount`.
pub struct UserDirectory {
    pub client: UserServiceClient<Channel>,
}

#[async_trait]
impl Directory for UserDirectory {
    async fn lookup(&self, usernames: &[String]) -> Result<Vec<DirectoryEntry>, Error> {
        let calls = usernames.iter().map(|name| {
            let mut client = self.client.clone();
            async move {
                let req = agora_kit::grpc::request(user_pb::LookupAccountRequest { username: name.clone() }, None);
                match client.lookup_account(req).await {
                    Ok(resp) => {
                        Ok(resp.into_inner().account.map(|a| DirectoryEntry { account_id: a.id, username: a.username }))
                    }
                    Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                    Err(status) => Err(Error::from(status)),
                }
            }
        });
        let found = futures::future::try_join_all(calls).await?;
        Ok(found.into_iter().flatten().collect())
    }
}

/// [`Relations`] over the graph service's `GetRelationships`, with the viewer's own token, cached
/// under the viewer's epoch (`agora_client::graph_facts`).
pub struct GraphRelations {
    pub facts: std::sync::Arc<GraphFacts>,
}

#[async_trait]
impl Relations for GraphRelations {
    async fn relations(&self, viewer: &Caller, account_ids: &[i64]) -> Result<HashMap<i64, Relation>, Error> {
        let Some(me) = viewer.claims.account_id() else { return Ok(HashMap::new()) };
        if account_ids.is_empty() {
            return Ok(HashMap::new());
        }
        match self.facts.relationships(me, &viewer.token, account_ids).await {
            Ok(map) => Ok(map
                .into_iter()
                .map(|(id, r)| {
                    (id, Relation { following: r.following, blocking: r.blocking, blocked_by: r.blocked_by })
                })
                .collect()),
            // A token without `read:follows` may not ask the graph. Such a viewer is treated as
            // following nobody: they see what a signed-out visitor sees, plus their own statuses
            // and those that mention them.
            Err(s) if s.code() == tonic::Code::PermissionDenied => {
                tracing::debug!("viewer token may not read relationships; assuming none");
                Ok(HashMap::new())
            }
            Err(s) => {
                let e = Error::from(s);
                // The graph being down must not read as "no relation": that could show a status
                // to someone its author blocked. The request fails instead.
                Err(if e.kind == ErrorKind::Internal {
                    Error::unavailable(ErrorKind::Unavailable.default_message())
                } else {
                    e
                })
            }
        }
    }
}
