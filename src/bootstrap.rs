//! `portcullis bootstrap`: the first organization, its admin, and the
//! platform account with an organization-scoped service key, made directly on
//! the database. It refuses to run twice.

use sea_orm::IntoActiveModel;
use serde_json::json;

use crate::{
    auth::key::{self, KeyKind},
    authz::OrgRole,
    domain::change::Tx,
    domain::{
        audit::{self, Actor, Change},
        organizations::{join, new_organization},
        rules::{self, Plan},
    },
    error::{Error, Result},
    store::{
        Store, StoreError,
        entity::{api_key, service_account, user},
        identity, new_id, now_ms,
    },
};

/// Who the first organization belongs to.
#[derive(Clone, Debug)]
pub struct BootstrapInput {
    pub organization_name: String,
    pub admin_email: String,
    /// The admin's subject at the identity provider.
    pub admin_subject: String,
}

/// What bootstrap created. `key` is shown once and stored only as a hash.
#[derive(Clone, Debug)]
pub struct BootstrapOutput {
    pub organization_id: String,
    pub admin_user_id: String,
    pub service_account_id: String,
    pub key: String,
}

impl BootstrapOutput {
    /// The one JSON object the CLI prints.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "organization_id": self.organization_id,
            "admin_user_id": self.admin_user_id,
            "service_account_id": self.service_account_id,
            "key": self.key,
        })
    }
}

/// Creates the first organization (enterprise plan), its admin user, and the
/// platform account (the identity-provider integration: it registers users,
/// acts for them and sets plans, across organizations), which is also an
/// admin of the first organization, with an organization-scoped service key.
pub async fn run(store: &Store, input: &BootstrapInput) -> Result<BootstrapOutput> {
    let org_name = rules::name("organization_name", &input.organization_name)?;
    let email = rules::email("admin_email", &input.admin_email)?;
    let subject = rules::subject("admin_subject", &input.admin_subject)?;
    let tx = Tx::detached(store).await?;
    let conn = tx.conn();
    if identity::count_organizations(conn).await? > 0 {
        return Err(Error::FailedPrecondition(
            "the database is already bootstrapped; bootstrap runs only on an empty database".into(),
        ));
    }
    let now = now_ms();
    let org = new_organization(org_name, Plan::Enterprise, None);
    identity::insert(conn, org.clone().into_active_model()).await?;
    let admin = user::Model {
        id: new_id(),
        external_subject: subject,
        email,
        created_at: now,
    };
    identity::insert(conn, admin.clone().into_active_model()).await?;
    join(&tx, &org, &admin, OrgRole::Admin).await?;
    let sa = service_account::Model {
        id: new_id(),
        organization_id: org.id.clone(),
        name: "bootstrap".into(),
        role: OrgRole::Admin.as_str().into(),
        platform: true,
        workspace_id: None,
        created_at: now,
    };
    identity::insert(conn, sa.clone().into_active_model()).await?;
    let new = key::generate(KeyKind::ServiceKey)
        .map_err(|e| StoreError::Internal(format!("random source failed: {e}")))?;
    let key_row = api_key::Model {
        id: new_id(),
        organization_id: org.id.clone(),
        kind: KeyKind::ServiceKey.as_str().into(),
        key_hash: new.hash,
        prefix: KeyKind::ServiceKey.prefix().into(),
        last_chars: new.last_chars,
        description: "bootstrap key".into(),
        user_id: None,
        service_account_id: Some(sa.id.clone()),
        scope: Some("organization".into()),
        workspace_ids: "[]".into(),
        workspace_id: None,
        expires_at: None,
        revoked_at: None,
        created_at: now,
    };
    identity::insert(conn, key_row.into_active_model()).await?;
    audit::record(
        &tx,
        &Actor::system("bootstrap"),
        Change {
            organization_id: Some(&org.id),
            action: "organization.bootstrap",
            target_type: "organization",
            target_id: &org.id,
            details: json!({ "admin_user_id": admin.id }),
        },
    );
    audit::record(
        &tx,
        &Actor::system("bootstrap"),
        Change {
            organization_id: None,
            action: "service_account.create",
            target_type: "service_account",
            target_id: &sa.id,
            details: json!({ "name": sa.name, "role": sa.role, "platform": true, "organization_id": org.id }),
        },
    );
    tx.commit().await?;
    Ok(BootstrapOutput {
        organization_id: org.id,
        admin_user_id: admin.id,
        service_account_id: sa.id,
        key: new.secret,
    })
}
