//! Batches of access changes: grants, revocations and team memberships
//! applied in one transaction under one revision, all or nothing, for bulk
//! provisioning and migrations. Each operation is authorized and validated
//! as its own RPC would be, inside the batch's transaction.

use crate::{
    auth::Caller,
    domain::{
        change::Tx,
        teams,
        workspaces::{self, ScopeInput, Subject},
    },
    error::{Error, Result},
    state::AppState,
    store::entity::grant,
};

/// Most operations in one batch.
pub const MAX_OPERATIONS: usize = 1000;

/// One operation of a batch.
#[derive(Clone, Debug)]
pub enum Operation {
    Grant {
        workspace_id: String,
        subject: Option<Subject>,
        role: String,
        scope: ScopeInput,
        expires_at: Option<i64>,
    },
    Revoke {
        workspace_id: String,
        grant_id: String,
    },
    AddTeamMember {
        organization_id: String,
        team_id: String,
        user_id: String,
        expires_at: Option<i64>,
    },
    RemoveTeamMember {
        organization_id: String,
        team_id: String,
        user_id: String,
    },
}

/// What one operation did: the new grant, for a grant.
pub type Outcome = Option<grant::Model>;

/// Applies `operations` in order in one change; the first refused one
/// refuses them all (nothing is written), its error naming its index.
pub async fn apply(
    state: &AppState,
    caller: &Caller,
    operations: Vec<Option<Operation>>,
) -> Result<(Vec<Outcome>, u64)> {
    if operations.is_empty() {
        return Err(Error::invalid(
            "operations",
            "must hold at least one operation",
        ));
    }
    if operations.len() > MAX_OPERATIONS {
        return Err(Error::invalid(
            "operations",
            format!(
                "holds {} operations; a batch holds at most {MAX_OPERATIONS}",
                operations.len()
            ),
        ));
    }
    let tx = Tx::begin(state, caller).await?;
    let mut outcomes = Vec::with_capacity(operations.len());
    for (index, operation) in operations.into_iter().enumerate() {
        let outcome = one(&tx, caller, operation)
            .await
            .map_err(|err| Error::Operation {
                index,
                source: Box::new(err),
            })?;
        outcomes.push(outcome);
    }
    Ok((outcomes, tx.commit().await?))
}

async fn one(tx: &Tx, caller: &Caller, operation: Option<Operation>) -> Result<Outcome> {
    let operation = operation.ok_or_else(|| {
        Error::invalid(
            "operation",
            "must be one of grant, revoke, add_team_member, remove_team_member",
        )
    })?;
    Ok(match operation {
        Operation::Grant {
            workspace_id,
            subject,
            role,
            scope,
            expires_at,
        } => Some(
            workspaces::grant_in(tx, caller, &workspace_id, subject, &role, scope, expires_at)
                .await?,
        ),
        Operation::Revoke {
            workspace_id,
            grant_id,
        } => {
            workspaces::revoke_in(tx, caller, &workspace_id, &grant_id).await?;
            None
        }
        Operation::AddTeamMember {
            organization_id,
            team_id,
            user_id,
            expires_at,
        } => {
            teams::add_team_member_in(tx, caller, &organization_id, &team_id, &user_id, expires_at)
                .await?;
            None
        }
        Operation::RemoveTeamMember {
            organization_id,
            team_id,
            user_id,
        } => {
            teams::remove_team_member_in(tx, caller, &organization_id, &team_id, &user_id).await?;
            None
        }
    })
}
