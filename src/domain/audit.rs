//! The audit log: recording changes inside the change's own transaction, and
//! reading them back. Each organization has its log, holding only what
//! touches it; changes that belong to no organization (users registered,
//! platform accounts and their keys) go to the platform log, which only
//! platform accounts read.

use crate::{
    auth::{Caller, PrincipalId},
    authz::{OrgPermission, power::PlatformPower},
    domain::{authorize, change::Tx},
    error::Result,
    state::AppState,
    store::{
        audit::{self, AuditFilter},
        entity::audit_event,
        finish_page, now_ms, page_size,
    },
};

/// Most bytes of an event's details; larger details are replaced by a note
/// of their size, so every event stays readable.
pub const MAX_DETAILS_BYTES: usize = 8 * 1024;

/// Who made a change.
#[derive(Clone, Debug)]
pub struct Actor {
    /// `user`, `service_account`, `platform` (a platform account) or `system`.
    pub kind: &'static str,
    pub id: String,
    /// The user a service account acted for.
    pub acting_for_user_id: Option<String>,
}

impl Actor {
    /// The command-line tool acting on the database directly.
    pub fn system(id: &str) -> Self {
        Self {
            kind: "system",
            id: id.to_owned(),
            acting_for_user_id: None,
        }
    }

    /// The caller of an RPC: under `x-act-as-user`, the platform account and
    /// the user.
    pub fn of(caller: &Caller) -> Self {
        match (&caller.acting_service_account_id, &caller.principal) {
            (Some(sa), PrincipalId::User(user)) => Self {
                kind: PLATFORM_ACTOR,
                id: sa.clone(),
                acting_for_user_id: Some(user.clone()),
            },
            (_, PrincipalId::User(user)) => Self {
                kind: "user",
                id: user.clone(),
                acting_for_user_id: None,
            },
            (_, PrincipalId::ServiceAccount(sa)) => Self {
                kind: if caller.key.platform {
                    PLATFORM_ACTOR
                } else {
                    "service_account"
                },
                id: sa.clone(),
                acting_for_user_id: None,
            },
        }
    }
}

/// The actor kind of a platform account's changes.
pub const PLATFORM_ACTOR: &str = "platform";

/// What a platform account's id reads as in an organization's log, to
/// readers who are not the platform: to them it does not exist.
pub const PLATFORM_PLACEHOLDER: &str = "platform";

/// One change to record.
pub struct Change<'a> {
    /// The organization whose log records it; `None`: the platform log.
    pub organization_id: Option<&'a str>,
    /// `<object>.<verb>`, e.g. `member.remove`.
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    /// Small before/after values; never secrets.
    pub details: serde_json::Value,
}

/// Records a change in the transaction that makes it (written when it
/// commits, with its revision).
pub fn record(tx: &Tx, actor: &Actor, change: Change<'_>) {
    let mut details = change.details.to_string();
    if details.len() > MAX_DETAILS_BYTES {
        details = serde_json::json!({ "truncated": true, "bytes": details.len() }).to_string();
    }
    tx.record(audit_event::Model {
        id: uuid::Uuid::now_v7().to_string(),
        organization_id: change.organization_id.map(str::to_owned),
        actor_type: actor.kind.to_owned(),
        actor_id: actor.id.clone(),
        acting_for_user_id: actor.acting_for_user_id.clone(),
        action: change.action.to_owned(),
        target_type: change.target_type.to_owned(),
        target_id: change.target_id.to_owned(),
        details,
        revision: 0,
        created_at: now_ms(),
    });
}

/// Which log to read.
#[derive(Clone, Copy, Debug)]
pub enum Log<'a> {
    /// An organization's (`""`: the calling key's).
    Organization(&'a str),
    /// The platform log.
    Platform,
}

/// A page of a log, newest first: an organization's for those who may read
/// its audit log, the platform's for platform accounts.
pub async fn list_events(
    state: &AppState,
    caller: &Caller,
    log: Log<'_>,
    filter: &AuditFilter,
    size: u32,
    token: &str,
) -> Result<(Vec<audit_event::Model>, String)> {
    let conn = state.store.db();
    let org_id = match log {
        Log::Organization(requested) => {
            let org_id = caller.organization(requested);
            authorize::org(conn, caller, org_id, OrgPermission::ViewAuditLog).await?;
            Some(org_id)
        }
        Log::Platform => {
            authorize::platform(conn, caller, PlatformPower::ReadPlatformLog).await?;
            None
        }
    };
    let size = page_size(size);
    let before = (!token.is_empty()).then_some(token);
    let rows = audit::events(conn, org_id, filter, before, size + 1).await?;
    let (mut rows, next) = finish_page(rows, size, |e| e.id.clone());
    if org_id.is_some() {
        let hidden = authorize::hidden_accounts(conn, caller).await?;
        for row in &mut rows {
            hide_accounts(
                &hidden,
                [&mut row.actor_id, &mut row.target_id, &mut row.details],
            );
        }
    }
    Ok((rows, next))
}

/// Replaces the ids of accounts hidden from the reader (platform accounts)
/// in `texts` with [`PLATFORM_PLACEHOLDER`].
pub fn hide_accounts<'a>(hidden: &[String], texts: impl IntoIterator<Item = &'a mut String>) {
    for text in texts {
        for id in hidden {
            if text.contains(id.as_str()) {
                *text = text.replace(id.as_str(), PLATFORM_PLACEHOLDER);
            }
        }
    }
}
