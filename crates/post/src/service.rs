//! The post service's behaviour, independent of gRPC. Every method takes the caller's bearer
//! token as presented (or none) and a request in wire types; `grpc.rs` only forwards.
//!
//! Who may see what is decided in one place, [`Posts::present`] and [`Posts::visible`]: a status
//! the caller may not see is answered exactly like a missing one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use agora_client::Caller;
use agora_events::Envelope;
use agora_kit::jwt::Verifier;
use agora_kit::{Error, ErrorKind, IdGenerator};
use agora_proto::events::v1 as ev;
use agora_proto::post::v1 as pb;
use tokio::sync::Notify;

use crate::domain::text::{self, ResolvedMention};
use crate::domain::{MentionRecord, StatusRecord, Visibility, may_see};
use crate::peers::{Directory, Relations};
use crate::store::{Bounds, Inserted, NewStatus, PageRead, PostStore, StatusEdit, ViewerMarks};

/// Mentions beyond this many in one status are left as text.
pub const MAX_MENTIONS: usize = 10;
/// Hashtags beyond this many in one status are not indexed.
pub const MAX_TAGS: usize = 30;
/// Replies reached when walking a thread, at most.
const MAX_THREAD: usize = 1000;
const MAX_ANCESTORS: usize = 64;
/// Most viewers one [`Posts::status_for_viewers`] call may name.
pub const MAX_VIEWERS: usize = 500;

pub struct Posts {
    pub store: Arc<dyn PostStore>,
    ids: Arc<IdGenerator>,
    verifier: Arc<Verifier>,
    directory: Arc<dyn Directory>,
    relations: Arc<dyn Relations>,
    public_url: String,
    max_chars: usize,
    outbox_wake: Arc<Notify>,
}

/// What [`Posts::new`] needs besides the store and the peers.
#[derive(Debug, Clone)]
pub struct PostRules {
    /// Base for mention and hashtag links, without trailing slash.
    pub public_url: String,
    /// Longest status text (plus content warning), in characters.
    pub max_chars: usize,
}

fn not_found() -> Error {
    Error::new(ErrorKind::NotFound, "Record not found")
}

fn bounds(page: Option<&pb::Page>, default_limit: usize, max_limit: usize) -> Bounds {
    let page = page.cloned().unwrap_or_default();
    let id = |v: i64| (v > 0).then_some(v);
    Bounds {
        max_id: id(page.max_id),
        since_id: id(page.since_id),
        min_id: id(page.min_id),
        limit: if page.limit <= 0 { default_limit } else { (page.limit as usize).min(max_limit) },
    }
}

/// One emoji: a short run of non-ASCII symbol characters (with joiners, selectors, keycaps).
fn valid_emoji(e: &str) -> bool {
    let count = e.chars().count();
    (1..=12).contains(&count)
        && e.chars().any(|c| c as u32 >= 0xA9)
        && e.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !c.is_alphabetic()
                && (c as u32 >= 0xA9 || c.is_ascii_digit() || c == '#' || c == '*')
        })
}

fn posted_payload(s: &StatusRecord, reblog_of_account_id: i64) -> ev::StatusPosted {
    ev::StatusPosted {
        id: s.id,
        account_id: s.account_id,
        created_at_ms: s.created_at_ms,
        visibility: s.visibility.as_str().to_owned(),
        in_reply_to_id: s.in_reply_to_id.unwrap_or_default(),
        in_reply_to_account_id: s.in_reply_to_account_id.unwrap_or_default(),
        reblog_of_id: s.reblog_of_id.unwrap_or_default(),
        reblog_of_account_id,
        mention_ids: s.mentions.iter().map(|m| m.account_id).collect(),
        tags: s.tags.clone(),
        has_media: false,
        language: s.language.clone(),
        sensitive: s.sensitive,
    }
}

/// Validated text of a new or edited status.
struct Composed {
    text: String,
    content: String,
    spoiler_text: String,
    language: String,
    mentions: Vec<MentionRecord>,
    tags: Vec<String>,
}

impl Posts {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn PostStore>,
        ids: Arc<IdGenerator>,
        verifier: Arc<Verifier>,
        directory: Arc<dyn Directory>,
        relations: Arc<dyn Relations>,
        rules: PostRules,
        outbox_wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            ids,
            verifier,
            directory,
            relations,
            public_url: rules.public_url.trim_end_matches('/').to_owned(),
            max_chars: rules.max_chars,
            outbox_wake,
        }
    }

    // ---- callers ----------------------------------------------------------------------------

    /// The verified caller, if a token was presented; UNAUTHENTICATED for a bad one, and
    /// PERMISSION_DENIED if it lacks `read:statuses`.
    async fn viewer(&self, token: Option<&str>) -> Result<Option<Caller>, Error> {
        let Some(token) = token else {
            return Ok(None);
        };
        let claims = self.verifier.verify(token).await?;
        if !claims.allows("read:statuses") {
            return Err(Error::forbidden("This action is outside the authorized scopes"));
        }
        Ok(Some(Caller { claims, token: token.to_owned() }))
    }

    /// A user (not an application token) whose token grants `scope`.
    async fn user(&self, token: Option<&str>, scope: &str) -> Result<(Caller, i64), Error> {
        let token = token.ok_or_else(|| Error::unauthenticated("The access token is invalid"))?;
        let claims = self.verifier.verify(token).await?;
        let id = claims.account_id().ok_or_else(|| Error::forbidden("This method requires an authenticated user"))?;
        if !claims.allows(scope) {
            return Err(Error::forbidden("This action is outside the authorized scopes"));
        }
        Ok((Caller { claims, token: token.to_owned() }, id))
    }

    fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
    }

    fn event(&self, kind: &str, status_id: i64, payload: &impl prost::Message) -> Envelope {
        agora_events::envelope(&self.ids, "post", kind, status_id, payload)
    }

    // ---- visibility -------------------------------------------------------------------------

    /// Which of `records` the viewer may see, with at most one relations call for all authors.
    async fn visible_mask(&self, viewer: Option<&Caller>, records: &[&StatusRecord]) -> Result<Vec<bool>, Error> {
        let viewer_id = viewer.and_then(|c| c.claims.account_id());
        let relations = match (viewer, viewer_id) {
            (Some(caller), Some(me)) => {
                let mut authors: Vec<i64> =
                    records.iter().filter(|r| !r.deleted && r.account_id != me).map(|r| r.account_id).collect();
                authors.sort_unstable();
                authors.dedup();
                if authors.is_empty() { HashMap::new() } else { self.relations.relations(caller, &authors).await? }
            }
            _ => HashMap::new(),
        };
        Ok(records
            .iter()
            .map(|r| may_see(r, viewer_id, relations.get(&r.account_id).copied().unwrap_or_default()))
            .collect())
    }

    /// Statuses the viewer may see among `records`, rendered, in order (see [`Self::present_read`]),
    /// after reading the originals of their reblogs and the viewer's marks.
    async fn present(&self, viewer: Option<&Caller>, records: Vec<StatusRecord>) -> Result<Vec<pb::Status>, Error> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let me = viewer.and_then(|c| c.claims.account_id());
        let page = PageRead::load(&*self.store, me, records).await?;
        self.present_read(viewer, page).await
    }

    /// Renders a page read from the store: drops what `viewer` may not see (a reblog shows only
    /// when both it and its original may be seen) and marks the rest with the viewer's
    /// favourites, reblogs, bookmarks and pins.
    async fn present_read(&self, viewer: Option<&Caller>, page: PageRead) -> Result<Vec<pb::Status>, Error> {
        let PageRead { records, originals, marks } = page;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let originals: HashMap<i64, StatusRecord> = originals.into_iter().map(|s| (s.id, s)).collect();
        let all: Vec<&StatusRecord> = records.iter().chain(originals.values()).collect();
        let mask = self.visible_mask(viewer, &all).await?;
        let visible: HashSet<i64> = all.iter().zip(mask).filter(|(_, ok)| *ok).map(|(r, _)| r.id).collect();
        Ok(records
            .iter()
            .filter(|r| visible.contains(&r.id) && r.reblog_of_id.is_none_or(|o| visible.contains(&o)))
            .map(|r| self.to_pb(r, r.reblog_of_id.and_then(|o| originals.get(&o)), &marks))
            .collect())
    }

    async fn present_one(&self, viewer: Option<&Caller>, record: StatusRecord) -> Result<pb::Status, Error> {
        self.present(viewer, vec![record]).await?.pop().ok_or_else(not_found)
    }

    fn to_pb(&self, r: &StatusRecord, original: Option<&StatusRecord>, marks: &ViewerMarks) -> pb::Status {
        // Marks on a reblog are the viewer's marks on the original, as Mastodon shows them.
        let target = r.reblog_of_id.unwrap_or(r.id);
        pb::Status {
            id: r.id,
            account_id: r.account_id,
            created_at_ms: r.created_at_ms,
            content: r.content.clone(),
            spoiler_text: r.spoiler_text.clone(),
            sensitive: r.sensitive,
            visibility: r.visibility.to_pb() as i32,
            language: r.language.clone(),
            in_reply_to_id: r.in_reply_to_id.unwrap_or_default(),
            in_reply_to_account_id: r.in_reply_to_account_id.unwrap_or_default(),
            mentions: r
                .mentions
                .iter()
                .map(|m| pb::Mention { account_id: m.account_id, username: m.username.clone() })
                .collect(),
            tags: r.tags.clone(),
            replies_count: r.replies_count,
            reblogs_count: r.reblogs_count,
            favourites_count: r.favourites_count,
            edited_at_ms: r.edited_at_ms.unwrap_or_default(),
            reblog: original.map(|o| Box::new(self.to_pb(o, None, marks))),
            text: String::new(),
            favourited: marks.favourited.contains(&target),
            reblogged: marks.reblogged.contains(&target),
            bookmarked: marks.bookmarked.contains(&target),
            pinned: marks.pinned.contains(&target),
            application_name: r.application_name.clone(),
        }
    }

    /// For a status that does not exist, the work a hidden one costs (one relations lookup),
    /// so that how long the answer takes does not tell a missing status from one the viewer
    /// may not see.
    async fn equalise_missing(&self, viewer: Option<&Caller>, id: i64) {
        if let Some(caller) = viewer.filter(|c| c.claims.account_id().is_some()) {
            let _ = self.relations.relations(caller, &[id]).await;
        }
    }

    /// The status `id` as stored if the viewer may see it; NOT_FOUND when missing, deleted or
    /// hidden, alike.
    async fn visible(&self, viewer: Option<&Caller>, id: i64) -> Result<StatusRecord, Error> {
        let Some(record) = self.store.statuses(&[id]).await?.pop().filter(|r| !r.deleted) else {
            self.equalise_missing(viewer, id).await;
            return Err(not_found());
        };
        if let Some(original) = record.reblog_of_id {
            let original = self.store.statuses(&[original]).await?.pop().ok_or_else(not_found)?;
            let mask = self.visible_mask(viewer, &[&record, &original]).await?;
            return if mask.iter().all(|ok| *ok) { Ok(record) } else { Err(not_found()) };
        }
        let mask = self.visible_mask(viewer, &[&record]).await?;
        if mask.first().copied().unwrap_or(false) { Ok(record) } else { Err(not_found()) }
    }

    /// Like [`Self::visible`], but a reblog stands for its original (what one favourites,
    /// reblogs, bookmarks or replies to).
    async fn visible_target(&self, viewer: Option<&Caller>, id: i64) -> Result<StatusRecord, Error> {
        let record = self.visible(viewer, id).await?;
        match record.reblog_of_id {
            Some(original) => self.visible(viewer, original).await,
            None => Ok(record),
        }
    }

    /// The caller's own status `id`: NOT_FOUND if they may not see it, PERMISSION_DENIED if
    /// they may see it but it is someone else's.
    async fn own(&self, caller: &Caller, me: i64, id: i64) -> Result<StatusRecord, Error> {
        let record = self.visible(Some(caller), id).await?;
        if record.account_id != me {
            return Err(Error::forbidden("This action is not allowed"));
        }
        Ok(record)
    }

    // ---- composing ---------------------------------------------------------------------------

    async fn compose(&self, text: &str, spoiler_text: &str, language: &str) -> Result<Composed, Error> {
        if text.trim().is_empty() {
            return Err(Error::invalid("text", "ERR_BLANK", "Text can't be blank"));
        }
        if text::length(text) + text::length(spoiler_text) > self.max_chars {
            return Err(Error::invalid(
                "text",
                "ERR_TOO_LONG",
                format!("Text is too long (maximum is {} characters)", self.max_chars),
            ));
        }
        let language = language.trim();
        if language.len() > 16 || !language.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::invalid("language", "ERR_INVALID", "Language is not a valid language code"));
        }
        let mut usernames = text::mentioned_usernames(text, text::host_of(&self.public_url));
        usernames.truncate(MAX_MENTIONS);
        let found = if usernames.is_empty() { Vec::new() } else { self.directory.lookup(&usernames).await? };
        let resolved: HashMap<String, ResolvedMention> = found
            .into_iter()
            .filter(|e| usernames.contains(&e.username.to_lowercase()))
            .map(|e| (e.username.to_lowercase(), ResolvedMention { account_id: e.account_id, username: e.username }))
            .collect();
        let mut mentions: Vec<MentionRecord> = Vec::new();
        for name in &usernames {
            if let Some(m) = resolved.get(name)
                && !mentions.iter().any(|x| x.account_id == m.account_id)
            {
                mentions.push(MentionRecord { account_id: m.account_id, username: m.username.clone() });
            }
        }
        let mut tags = text::hashtags(text);
        tags.truncate(MAX_TAGS);
        Ok(Composed {
            text: text.to_owned(),
            content: text::render(text, &self.public_url, &resolved),
            spoiler_text: spoiler_text.to_owned(),
            language: language.to_owned(),
            mentions,
            tags,
        })
    }

    // ---- statuses ----------------------------------------------------------------------------

    pub async fn create_status(&self, token: Option<&str>, req: pb::CreateStatusRequest) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:statuses").await?;
        let visibility = Visibility::from_pb(req.visibility)
            .ok_or_else(|| Error::invalid("visibility", "ERR_INVALID", "Visibility is not valid"))?;
        let composed = self.compose(&req.text, &req.spoiler_text, &req.language).await?;
        let parent = if req.in_reply_to_id != 0 {
            // A missing, deleted and invisible parent are the same answer.
            Some(self.visible_target(Some(&caller), req.in_reply_to_id).await?)
        } else {
            None
        };
        let key = req.idempotency_key.trim();
        let status = NewStatus {
            id: self.ids.next_id(),
            account_id: me,
            text: composed.text,
            content: composed.content,
            spoiler_text: composed.spoiler_text,
            sensitive: req.sensitive || !req.spoiler_text.trim().is_empty(),
            visibility,
            language: composed.language,
            in_reply_to_id: parent.as_ref().map(|p| p.id),
            in_reply_to_account_id: parent.as_ref().map(|p| p.account_id),
            reblog_of_id: None,
            created_at_ms: agora_kit::time::now_ms(),
            application_name: String::new(),
            idempotency_key: (!key.is_empty()).then(|| key.chars().take(255).collect()),
            mentions: composed.mentions,
            tags: composed.tags,
        };
        let inserted =
            self.store.create_status(&status, &|s| self.event("post.created", s.id, &posted_payload(s, 0))).await?;
        if let Inserted::New(s) = &inserted {
            metrics::counter!("agora_post_statuses_created_total", "visibility" => s.visibility.as_str()).increment(1);
            self.wake_outbox();
        }
        self.present_one(Some(&caller), inserted.into_status()).await
    }

    pub async fn get_statuses(&self, token: Option<&str>, ids: &[i64]) -> Result<Vec<pb::Status>, Error> {
        let viewer = self.viewer(token).await?;
        let ids: Vec<i64> = ids.iter().copied().take(200).collect();
        let me = viewer.as_ref().and_then(|c| c.claims.account_id());
        let page = self.store.page_for(me, &ids).await?;
        if page.records.is_empty() && !ids.is_empty() {
            self.equalise_missing(viewer.as_ref(), ids[0]).await;
        }
        self.present_read(viewer.as_ref(), page).await
    }

    /// Status `id` as each of the viewers named by `tokens` sees it (see `GetStatusForViewers`):
    /// the status read once, each viewer's visibility decided as [`Self::get_statuses`] decides
    /// it, and all the viewers' marks in one read. A token that does not verify, or lacks
    /// `read:statuses`, sees nothing.
    pub async fn status_for_viewers(
        &self,
        id: i64,
        tokens: &[String],
    ) -> Result<pb::GetStatusForViewersResponse, Error> {
        if tokens.len() > MAX_VIEWERS {
            return Err(Error::invalid("tokens", "ERR_TOO_LONG", format!("At most {MAX_VIEWERS} viewers per call")));
        }
        let hidden = || pb::GetStatusForViewersResponse {
            status: None,
            views: vec![pb::ViewerView::default(); tokens.len()],
            author_stats: Vec::new(),
        };
        // The status and, for a reblog, its original, in one read (no viewer: no marks).
        let PageRead { mut records, mut originals, .. } = self.store.page_for(None, &[id]).await?;
        let Some(record) = records.pop().filter(|r| !r.deleted) else { return Ok(hidden()) };
        let original = originals.pop();
        if record.reblog_of_id.is_some() && original.as_ref().is_none_or(|o| o.deleted) {
            return Ok(hidden());
        }
        let records: Vec<&StatusRecord> = std::iter::once(&record).chain(original.as_ref()).collect();
        let seen = futures::future::join_all(tokens.iter().map(|t| {
            let records = &records;
            async move {
                let viewer = self.viewer(Some(t)).await.ok().flatten()?;
                let mask = self.visible_mask(Some(&viewer), records).await.ok()?;
                mask.into_iter().all(|ok| ok).then(|| viewer.claims.account_id())
            }
        }))
        .await;
        let target = record.reblog_of_id.unwrap_or(record.id);
        let mut accounts: Vec<i64> = seen.iter().flatten().flatten().copied().collect();
        accounts.sort_unstable();
        accounts.dedup();
        let marks = self.store.marks_of_viewers(target, &accounts).await?;
        let none = ViewerMarks::default();
        let views = seen
            .iter()
            .map(|v| match v {
                None => pb::ViewerView::default(),
                Some(account) => {
                    let m = account.and_then(|a| marks.get(&a)).unwrap_or(&none);
                    pb::ViewerView {
                        visible: true,
                        favourited: m.favourited.contains(&target),
                        reblogged: m.reblogged.contains(&target),
                        bookmarked: m.bookmarked.contains(&target),
                        pinned: m.pinned.contains(&target),
                    }
                }
            })
            .collect();
        let status = self.to_pb(&record, original.as_ref(), &none);
        let author_stats = self.author_stats(std::slice::from_ref(&status)).await?;
        Ok(pb::GetStatusForViewersResponse { status: Some(status), views, author_stats })
    }

    pub async fn delete_status(&self, token: Option<&str>, id: i64) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:statuses").await?;
        let record = self.own(&caller, me, id).await?;
        let now = agora_kit::time::now_ms();
        let deleted = self
            .store
            .delete_status(id, now, &|s| {
                let payload = ev::StatusDeleted {
                    id: s.id,
                    account_id: s.account_id,
                    reblog_of_id: s.reblog_of_id.unwrap_or_default(),
                    deleted_at_ms: now,
                };
                self.event("post.deleted", s.id, &payload)
            })
            .await?
            .ok_or_else(not_found)?;
        metrics::counter!("agora_post_statuses_deleted_total").increment(1 + deleted.reblogs.len() as u64);
        self.wake_outbox();
        let original = match record.reblog_of_id {
            Some(o) => self.store.statuses(&[o]).await?.pop(),
            None => None,
        };
        let mut out = self.to_pb(&record, original.as_ref(), &ViewerMarks::default());
        out.text = record.text;
        Ok(out)
    }

    pub async fn edit_status(&self, token: Option<&str>, req: pb::EditStatusRequest) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:statuses").await?;
        let current = self.own(&caller, me, req.id).await?;
        if current.reblog_of_id.is_some() {
            return Err(Error::invalid("id", "ERR_INVALID", "A reblog cannot be edited"));
        }
        let language = if req.language.trim().is_empty() { current.language.clone() } else { req.language.clone() };
        let composed = self.compose(&req.text, &req.spoiler_text, &language).await?;
        let edit = StatusEdit {
            text: composed.text,
            content: composed.content,
            spoiler_text: composed.spoiler_text,
            sensitive: req.sensitive || !req.spoiler_text.trim().is_empty(),
            language: composed.language,
            mentions: composed.mentions,
            tags: composed.tags,
            edited_at_ms: agora_kit::time::now_ms(),
            edit_ids: [self.ids.next_id(), self.ids.next_id()],
        };
        let edited =
            self.store.edit_status(req.id, &edit, &|s| self.event("post.updated", s.id, &posted_payload(s, 0))).await?;
        metrics::counter!("agora_post_statuses_edited_total").increment(1);
        self.wake_outbox();
        self.present_one(Some(&caller), edited).await
    }

    pub async fn get_history(&self, token: Option<&str>, id: i64) -> Result<Vec<pb::StatusEdit>, Error> {
        let viewer = self.viewer(token).await?;
        let record = self.visible(viewer.as_ref(), id).await?;
        let versions = self.store.history(record.id).await?;
        Ok(versions
            .into_iter()
            .map(|v| pb::StatusEdit {
                content: v.content,
                spoiler_text: v.spoiler_text,
                sensitive: v.sensitive,
                created_at_ms: v.created_at_ms,
                account_id: record.account_id,
            })
            .collect())
    }

    pub async fn get_source(&self, token: Option<&str>, id: i64) -> Result<pb::GetSourceResponse, Error> {
        let (caller, me) = self.user(token, "read:statuses").await?;
        let record = self.own(&caller, me, id).await?;
        Ok(pb::GetSourceResponse { id: record.id, text: record.text, spoiler_text: record.spoiler_text })
    }

    pub async fn get_context(&self, token: Option<&str>, id: i64) -> Result<pb::GetContextResponse, Error> {
        let viewer = self.viewer(token).await?;
        let target = self.visible_target(viewer.as_ref(), id).await?;

        // Walk up through deleted ancestors too (replies keep pointing at them); they are
        // left out of the answer by `present`.
        let mut ancestors = Vec::new();
        let mut next = target.in_reply_to_id;
        let mut seen = HashSet::from([target.id]);
        while let Some(parent_id) = next {
            if ancestors.len() >= MAX_ANCESTORS || !seen.insert(parent_id) {
                break;
            }
            let Some(parent) = self.store.statuses(&[parent_id]).await?.pop() else { break };
            next = parent.in_reply_to_id;
            ancestors.push(parent);
        }
        ancestors.reverse();

        let mut children: HashMap<i64, Vec<StatusRecord>> = HashMap::new();
        let mut frontier = vec![target.id];
        let mut reached = 0;
        while !frontier.is_empty() && reached < MAX_THREAD {
            let replies = self.store.replies(&frontier).await?;
            reached += replies.len();
            frontier = replies.iter().map(|r| r.id).filter(|id| seen.insert(*id)).collect();
            for r in replies {
                if let Some(parent) = r.in_reply_to_id {
                    children.entry(parent).or_default().push(r);
                }
            }
        }
        // Depth first, oldest sibling first.
        let mut descendants = Vec::new();
        let mut stack: Vec<StatusRecord> = children.remove(&target.id).unwrap_or_default();
        stack.sort_by_key(|r| std::cmp::Reverse(r.id));
        while let Some(r) = stack.pop() {
            let mut kids = children.remove(&r.id).unwrap_or_default();
            kids.sort_by_key(|k| std::cmp::Reverse(k.id));
            descendants.push(r);
            stack.extend(kids);
        }
        let ancestor_count = ancestors.len();
        let mut all = ancestors;
        all.extend(descendants);
        let ancestor_ids: HashSet<i64> = all[..ancestor_count].iter().map(|r| r.id).collect();
        let shown = self.present(viewer.as_ref(), all).await?;
        let (ancestors, descendants) = shown.into_iter().partition(|s| ancestor_ids.contains(&s.id));
        Ok(pb::GetContextResponse { ancestors, descendants })
    }

    // ---- favourites, reblogs, bookmarks, pins ---------------------------------------------------

    pub async fn favourite(&self, token: Option<&str>, id: i64) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:favourites").await?;
        let target = self.visible_target(Some(&caller), id).await?;
        let payload = ev::StatusFavourited {
            status_id: target.id,
            status_account_id: target.account_id,
            account_id: me,
            occurred_at_ms: agora_kit::time::now_ms(),
        };
        let event = self.event("post.favourited", target.id, &payload);
        if self.store.favourite(self.ids.next_id(), me, target.id, &event).await? {
            metrics::counter!("agora_post_favourites_total").increment(1);
            self.wake_outbox();
        }
        self.fresh(&caller, target.id).await
    }

    pub async fn unfavourite(&self, token: Option<&str>, id: i64) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:favourites").await?;
        let target = self.visible_target(Some(&caller), id).await?;
        let payload = ev::StatusFavourited {
            status_id: target.id,
            status_account_id: target.account_id,
            account_id: me,
            occurred_at_ms: agora_kit::time::now_ms(),
        };
        let event = self.event("post.unfavourited", target.id, &payload);
        if self.store.unfavourite(me, target.id, &event).await? {
            metrics::counter!("agora_post_unfavourites_total").increment(1);
            self.wake_outbox();
        }
        self.fresh(&caller, target.id).await
    }

    /// The status as it is now, for the caller.
    async fn fresh(&self, caller: &Caller, id: i64) -> Result<pb::Status, Error> {
        let record = self.store.statuses(&[id]).await?.pop().ok_or_else(not_found)?;
        self.present_one(Some(caller), record).await
    }

    pub async fn reblog(&self, token: Option<&str>, req: pb::ReblogRequest) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:statuses").await?;
        let target = self.visible_target(Some(&caller), req.id).await?;
        if matches!(target.visibility, Visibility::Private | Visibility::Direct) {
            return Err(Error::invalid("id", "ERR_INVALID", "Private and direct statuses cannot be reblogged"));
        }
        let visibility = match Visibility::from_pb(req.visibility) {
            Some(v @ (Visibility::Public | Visibility::Unlisted | Visibility::Private)) => v,
            _ => return Err(Error::invalid("visibility", "ERR_INVALID", "Visibility is not valid for a reblog")),
        };
        let reblog = NewStatus {
            id: self.ids.next_id(),
            account_id: me,
            text: String::new(),
            content: String::new(),
            spoiler_text: String::new(),
            sensitive: false,
            visibility,
            language: String::new(),
            in_reply_to_id: None,
            in_reply_to_account_id: None,
            reblog_of_id: Some(target.id),
            created_at_ms: agora_kit::time::now_ms(),
            application_name: String::new(),
            idempotency_key: None,
            mentions: Vec::new(),
            tags: Vec::new(),
        };
        let author = target.account_id;
        let inserted = self
            .store
            .reblog(&reblog, &|s| self.event("post.created", s.id, &posted_payload(s, author)))
            .await
            .map_err(|e| match Error::from(e) {
                e if e.kind == ErrorKind::NotFound => not_found(),
                e => e,
            })?;
        if matches!(inserted, Inserted::New(_)) {
            metrics::counter!("agora_post_reblogs_total").increment(1);
            self.wake_outbox();
        }
        self.present_one(Some(&caller), inserted.into_status()).await
    }

    pub async fn unreblog(&self, token: Option<&str>, id: i64) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:statuses").await?;
        // Undoing must work even if the original has since become hidden from the caller.
        let record = self.store.statuses(&[id]).await?.pop().ok_or_else(not_found)?;
        // Given a reblog (the caller's or anyone's), undo the caller's reblog of its original.
        let original_id = record.reblog_of_id.unwrap_or(record.id);
        let removed = self
            .store
            .unreblog(me, original_id, &|s| {
                let payload = ev::StatusDeleted {
                    id: s.id,
                    account_id: s.account_id,
                    reblog_of_id: s.reblog_of_id.unwrap_or_default(),
                    deleted_at_ms: agora_kit::time::now_ms(),
                };
                self.event("post.deleted", s.id, &payload)
            })
            .await?;
        if removed.is_some() {
            metrics::counter!("agora_post_unreblogs_total").increment(1);
            self.wake_outbox();
        }
        self.fresh(&caller, original_id).await
    }

    pub async fn bookmark(&self, token: Option<&str>, id: i64) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:bookmarks").await?;
        let target = self.visible_target(Some(&caller), id).await?;
        self.store.bookmark(self.ids.next_id(), me, target.id).await?;
        self.fresh(&caller, target.id).await
    }

    pub async fn unbookmark(&self, token: Option<&str>, id: i64) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:bookmarks").await?;
        let target = self.visible_target(Some(&caller), id).await?;
        self.store.unbookmark(me, target.id).await?;
        self.fresh(&caller, target.id).await
    }

    pub async fn pin(&self, token: Option<&str>, id: i64) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:statuses").await?;
        let record = self.own(&caller, me, id).await?;
        if record.reblog_of_id.is_some() || record.visibility == Visibility::Direct {
            return Err(Error::invalid("id", "ERR_INVALID", "This status cannot be pinned"));
        }
        self.store.pin(self.ids.next_id(), me, record.id).await?;
        self.fresh(&caller, record.id).await
    }

    pub async fn unpin(&self, token: Option<&str>, id: i64) -> Result<pb::Status, Error> {
        let (caller, me) = self.user(token, "write:statuses").await?;
        let record = self.own(&caller, me, id).await?;
        self.store.unpin(me, record.id).await?;
        self.fresh(&caller, record.id).await
    }

    // ---- lists -------------------------------------------------------------------------------

    pub async fn favourited_by(
        &self,
        token: Option<&str>,
        req: pb::ListByStatusRequest,
    ) -> Result<pb::AccountPage, Error> {
        let viewer = self.viewer(token).await?;
        let target = self.visible_target(viewer.as_ref(), req.id).await?;
        let entries = self.store.favourited_by(target.id, bounds(req.page.as_ref(), 40, 80)).await?;
        Ok(pb::AccountPage {
            account_ids: entries.iter().map(|e| e.id).collect(),
            cursor_ids: entries.iter().map(|e| e.cursor).collect(),
        })
    }

    pub async fn reblogged_by(
        &self,
        token: Option<&str>,
        req: pb::ListByStatusRequest,
    ) -> Result<pb::AccountPage, Error> {
        let viewer = self.viewer(token).await?;
        let target = self.visible_target(viewer.as_ref(), req.id).await?;
        let entries = self.store.reblogged_by(target.id, bounds(req.page.as_ref(), 40, 80)).await?;
        Ok(pb::AccountPage {
            account_ids: entries.iter().map(|e| e.id).collect(),
            cursor_ids: entries.iter().map(|e| e.cursor).collect(),
        })
    }

    /// Statuses of a page of `(cursor, status id)` entries the caller may see, cursors aligned.
    async fn status_page(&self, caller: &Caller, entries: Vec<crate::store::Entry>) -> Result<pb::StatusPage, Error> {
        let cursor_of: HashMap<i64, i64> = entries.iter().map(|e| (e.id, e.cursor)).collect();
        let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
        let records = self.store.statuses(&ids).await?;
        let statuses = self.present(Some(caller), records).await?;
        let cursor_ids = statuses.iter().map(|s| cursor_of.get(&s.id).copied().unwrap_or_default()).collect();
        Ok(pb::StatusPage { statuses, cursor_ids })
    }

    pub async fn list_favourites(&self, token: Option<&str>, page: Option<&pb::Page>) -> Result<pb::StatusPage, Error> {
        let (caller, me) = self.user(token, "read:favourites").await?;
        let entries = self.store.favourites_of(me, bounds(page, 20, 40)).await?;
        self.status_page(&caller, entries).await
    }

    pub async fn list_bookmarks(&self, token: Option<&str>, page: Option<&pb::Page>) -> Result<pb::StatusPage, Error> {
        let (caller, me) = self.user(token, "read:bookmarks").await?;
        let entries = self.store.bookmarks_of(me, bounds(page, 20, 40)).await?;
        self.status_page(&caller, entries).await
    }

    pub async fn list_pinned(&self, token: Option<&str>, account_id: i64) -> Result<pb::StatusPage, Error> {
        let viewer = self.viewer(token).await?;
        let entries = self.store.pinned_of(account_id).await?;
        let cursor_of: HashMap<i64, i64> = entries.iter().map(|e| (e.id, e.cursor)).collect();
        let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
        let records = self.store.statuses(&ids).await?;
        let statuses = self.present(viewer.as_ref(), records).await?;
        let cursor_ids = statuses.iter().map(|s| cursor_of.get(&s.id).copied().unwrap_or_default()).collect();
        Ok(pb::StatusPage { statuses, cursor_ids })
    }

    // ---- reactions ---------------------------------------------------------------------------

    async fn reactions_of(&self, status_id: i64, viewer: Option<i64>) -> Result<Vec<pb::Reaction>, Error> {
        Ok(self
            .store
            .reactions(status_id, viewer)
            .await?
            .into_iter()
            .map(|r| pb::Reaction { name: r.emoji, count: r.count, me: r.me })
            .collect())
    }

    pub async fn add_reaction(
        &self,
        token: Option<&str>,
        req: pb::ReactionRequest,
    ) -> Result<Vec<pb::Reaction>, Error> {
        let (caller, me) = self.user(token, "write:favourites").await?;
        let emoji = req.emoji.trim();
        if !valid_emoji(emoji) {
            return Err(Error::invalid("emoji", "ERR_INVALID", "Emoji is not a valid emoji"));
        }
        let target = self.visible_target(Some(&caller), req.id).await?;
        let event = self.reaction_event("post.reacted", &target, me, emoji);
        if self.store.add_reaction(self.ids.next_id(), target.id, me, emoji, &event).await? {
            metrics::counter!("agora_post_reactions_total", "change" => "added").increment(1);
            self.wake_outbox();
        }
        self.reactions_of(target.id, Some(me)).await
    }

    /// The event of `me` reacting to `target` with `emoji` (or taking it back).
    fn reaction_event(&self, kind: &str, target: &StatusRecord, me: i64, emoji: &str) -> Envelope {
        let payload = ev::StatusReacted {
            status_id: target.id,
            status_account_id: target.account_id,
            account_id: me,
            emoji: emoji.to_owned(),
            occurred_at_ms: agora_kit::time::now_ms(),
        };
        self.event(kind, target.id, &payload)
    }

    pub async fn remove_reaction(
        &self,
        token: Option<&str>,
        req: pb::ReactionRequest,
    ) -> Result<Vec<pb::Reaction>, Error> {
        let (caller, me) = self.user(token, "write:favourites").await?;
        let target = self.visible_target(Some(&caller), req.id).await?;
        let emoji = req.emoji.trim();
        let event = self.reaction_event("post.unreacted", &target, me, emoji);
        if self.store.remove_reaction(target.id, me, emoji, &event).await? {
            metrics::counter!("agora_post_reactions_total", "change" => "removed").increment(1);
            self.wake_outbox();
        }
        self.reactions_of(target.id, Some(me)).await
    }

    pub async fn list_reactions(&self, token: Option<&str>, id: i64) -> Result<Vec<pb::Reaction>, Error> {
        let viewer = self.viewer(token).await?;
        let target = self.visible_target(viewer.as_ref(), id).await?;
        self.reactions_of(target.id, viewer.and_then(|c| c.claims.account_id())).await
    }

    // ---- accounts ----------------------------------------------------------------------------

    pub async fn account_stats(&self, token: Option<&str>, ids: &[i64]) -> Result<Vec<pb::AccountStats>, Error> {
        if let Some(t) = token {
            self.verifier.verify(t).await?;
        }
        self.stats_of(ids).await
    }

    /// The status counts of the authors of `statuses` (and of the statuses they reblog), for
    /// statuses already shown to their caller.
    pub async fn author_stats(&self, statuses: &[pb::Status]) -> Result<Vec<pb::AccountStats>, Error> {
        let mut ids: Vec<i64> = statuses
            .iter()
            .flat_map(|s| std::iter::once(s.account_id).chain(s.reblog.as_ref().map(|r| r.account_id)))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        self.stats_of(&ids).await
    }

    async fn stats_of(&self, ids: &[i64]) -> Result<Vec<pb::AccountStats>, Error> {
        let ids: Vec<i64> = ids.iter().copied().take(200).collect();
        Ok(self
            .store
            .account_stats(&ids)
            .await?
            .into_iter()
            .map(|s| pb::AccountStats {
                id: s.account_id,
                statuses_count: s.statuses_count,
                last_status_at_ms: s.last_status_at_ms,
            })
            .collect())
    }

    /// Statuses of an account as the events that announced them, newest first (for rebuilding
    /// timelines). Internal: direct statuses are included.
    pub async fn account_status_events(
        &self,
        req: pb::ListAccountStatusEventsRequest,
    ) -> Result<Vec<ev::StatusPosted>, Error> {
        let limit = if req.limit <= 0 { 20 } else { (req.limit as usize).min(500) };
        let max_id = (req.max_id > 0).then_some(req.max_id);
        let records = self.store.account_statuses(req.account_id, max_id, limit).await?;
        let mut original_ids: Vec<i64> = records.iter().filter_map(|r| r.reblog_of_id).collect();
        original_ids.sort_unstable();
        original_ids.dedup();
        let authors: HashMap<i64, i64> =
            self.store.statuses(&original_ids).await?.into_iter().map(|s| (s.id, s.account_id)).collect();
        Ok(records
            .iter()
            .map(|r| posted_payload(r, r.reblog_of_id.and_then(|o| authors.get(&o).copied()).unwrap_or_default()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_rule() {
        for ok in ["👍", "❤️", "👩‍💻", "🇫🇷", "1️⃣", "🦀"] {
            assert!(valid_emoji(ok), "{ok}");
        }
        for bad in ["", "a", "ab", "<b>", "👍 👍", "x👍", "\u{0}", "👍👍👍👍👍👍👍👍👍👍👍👍👍"]
        {
            assert!(!valid_emoji(bad), "{bad:?}");
        }
    }

    #[test]
    fn page_bounds() {
        let b = bounds(Some(&pb::Page { max_id: 10, since_id: 0, min_id: 3, limit: 500 }), 20, 40);
        assert_eq!(b, Bounds { max_id: Some(10), since_id: None, min_id: Some(3), limit: 40 });
        assert_eq!(bounds(None, 20, 40).limit, 20);
    }
}
