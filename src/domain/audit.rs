//! Recording changes in the audit log, inside the change's own transaction.

use crate::{
    auth::{Caller, PrincipalId},
    domain::tx::Tx,
    store::{StoreResult, entity::audit_event, identity::insert, now_ms},
};
use sea_orm::IntoActiveModel;

/// Who made a change.
#[derive(Clone, Debug)]
pub struct Actor {
    /// `user`, `service_account` or `system`.
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

    /// The caller of an RPC: under `x-act-as-user`, the service account and the user.
    pub fn of(caller: &Caller) -> Self {
        match (&caller.acting_service_account_id, &caller.principal) {
            (Some(sa), PrincipalId::User(user)) => Self {
                kind: "service_account",
                id: sa.clone(),
                acting_for_user_id: Some(user.clone()),
            },
            (_, PrincipalId::User(user)) => Self {
                kind: "user",
                id: user.clone(),
                acting_for_user_id: None,
            },
            (_, PrincipalId::ServiceAccount(sa)) => Self {
                kind: "service_account",
                id: sa.clone(),
                acting_for_user_id: None,
            },
        }
    }
}

/// One change to record.
pub struct Change<'a> {
    pub organization_id: Option<&'a str>,
    /// `<object>.<verb>`, e.g. `member.remove`.
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    /// Small before/after values; never secrets.
    pub details: serde_json::Value,
}

/// Records a change in the transaction that makes it.
pub async fn record(tx: &Tx, actor: &Actor, change: Change<'_>) -> StoreResult<()> {
    let row = audit_event::Model {
        id: uuid::Uuid::now_v7().to_string(),
        organization_id: change.organization_id.map(str::to_owned),
        actor_type: actor.kind.to_owned(),
        actor_id: actor.id.clone(),
        acting_for_user_id: actor.acting_for_user_id.clone(),
        action: change.action.to_owned(),
        target_type: change.target_type.to_owned(),
        target_id: change.target_id.to_owned(),
        details: change.details.to_string(),
        revision: i64::try_from(tx.revision()).unwrap_or(i64::MAX),
        created_at: now_ms(),
    };
    insert(tx.conn(), row.into_active_model()).await
}
