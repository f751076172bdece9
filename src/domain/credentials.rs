//! Temporary credentials: short-lived tokens (JWTs, [`crate::auth::jwt`])
//! that let a storage service act on one workspace's data with some of the
//! caller's own permissions, verified offline with the published keys.
//!
//! * **Issue.** A caller asks for permissions (and optionally a tag scope)
//!   in one workspace; [`authorize::may_hold_credential`] decides, inside the
//!   change that records the issue in the audit log, that it holds them all
//!   itself. The token is signed after that change commits, with its revision.
//! * **Keys.** By default the signing keys live in the database, shared by
//!   every replica: one is current; the first is made at start-up (two
//!   replicas starting at once cannot both make one: `current_key` is
//!   unique); a rotation retires it and makes a new one in one change. Each
//!   issue reads the current key inside its change, so a replica signs with
//!   a rotated key as soon as the rotation commits, and never with a key
//!   the key set does not hold: every replica serves the key set from
//!   storage on each request. A retired key stays published for the longest
//!   lifetime a credential may have, and [`RETIRED_KEY_GRACE`] more. With
//!   `--signing-key-file` the one key comes from a file instead.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use super::{
    access,
    audit::{self, Actor, Change},
    authorize,
    change::Tx,
    workspaces::{self, ScopeInput},
};
use crate::{
    auth::{
        Caller, PrincipalId,
        jwt::{self, Claims, KeyPair},
    },
    authz::{catalogue::PermissionSet, engine::Scope, power::PlatformPower},
    config::CredentialSettings,
    error::{Error, Result},
    state::AppState,
    store::{Reads, Store, StoreError, entity::signing_key, now_ms, signing_keys},
};

/// Shortest lifetime a credential may ask for.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// Most permissions one credential carries.
pub const MAX_PERMISSIONS: usize = 64;

/// How long a retired key stays published beyond the longest lifetime of a
/// credential: covers an issue that read the key just before the rotation
/// committed, and small clock differences between replicas.
pub const RETIRED_KEY_GRACE: Duration = Duration::from_secs(5);

/// How long retired keys are kept at all (the longest `max_ttl` and the
/// grace): a rotation deletes older ones.
const RETIRED_KEY_RETENTION: Duration = Duration::from_secs(24 * 3600 + 5);

/// An issued credential.
#[derive(Debug)]
pub struct Issued {
    /// The signed JWT.
    pub token: String,
    /// The `kid` of the key that signed it.
    pub key_id: String,
    /// The `jti`.
    pub id: String,
    pub workspace_id: String,
    pub permissions: Vec<String>,
    pub scope: Option<Scope>,
    /// `exp`, in milliseconds since the epoch.
    pub expires_at_ms: i64,
    /// The revision that recorded the issue (`rev`).
    pub revision: u64,
}

/// A published verification key.
#[derive(Clone, Debug)]
pub struct PublishedKey {
    /// `kid`.
    pub id: String,
    /// The public key, base64url (`x`).
    pub public_key: String,
    /// It signs new credentials.
    pub current: bool,
    /// When it stopped signing, in milliseconds since the epoch.
    pub retired_at: Option<i64>,
}

/// The lifetime a request asks for (`None`: the default), within bounds.
fn lifetime(settings: &CredentialSettings, ttl_seconds: Option<u32>) -> Result<Duration> {
    let Some(seconds) = ttl_seconds else {
        return Ok(settings.default_ttl);
    };
    let ttl = Duration::from_secs(u64::from(seconds));
    if ttl < MIN_TTL || ttl > settings.max_ttl {
        return Err(Error::invalid(
            "ttl_seconds",
            format!(
                "must be between {} and {} seconds (leave it out for the default, {} seconds)",
                MIN_TTL.as_secs(),
                settings.max_ttl.as_secs(),
                settings.default_ttl.as_secs()
            ),
        ));
    }
    Ok(ttl)
}

/// The requested permission names, sorted and without repeats.
fn permission_names(mut names: Vec<String>) -> Result<Vec<String>> {
    if names.is_empty() {
        return Err(Error::invalid(
            "permissions",
            "name at least one permission, like `datasets:read`",
        ));
    }
    if names.len() > MAX_PERMISSIONS {
        return Err(Error::invalid(
            "permissions",
            format!("at most {MAX_PERMISSIONS} permissions"),
        ));
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// `sub`: the principal the credential acts as.
fn subject(principal: &PrincipalId) -> String {
    match principal {
        PrincipalId::User(id) => format!("user:{id}"),
        PrincipalId::ServiceAccount(id) => format!("service_account:{id}"),
    }
}

/// Issues a credential for the caller in `workspace_id` (or `x-tenant-id`,
/// or its key's default workspace) carrying `permissions` over `scope`, for
/// `ttl_seconds` (`None`: the default lifetime).
pub async fn create_temporary_credentials(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    permissions: Vec<String>,
    scope: ScopeInput,
    ttl_seconds: Option<u32>,
) -> Result<Issued> {
    let settings = &state.settings.credentials;
    let ttl = lifetime(settings, ttl_seconds)?;
    let permissions = permission_names(permissions)?;
    if settings.key_file.is_none() {
        ensure_signing_key(&state.store).await?;
    }
    // Taken before the change, so the credential expires no later than
    // `ttl` after the decision (and within the key's publication).
    let issued_at = now_ms() / 1000;
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let mut expires_at = issued_at.saturating_add(ttl_secs);
    let tx = Tx::begin(state, caller).await?;
    let conn = tx.conn();
    let (ws, power) = authorize::workspace(conn, caller, workspace_id).await?;
    let catalogue = access::catalogue(conn, &ws.organization_id).await?;
    let mut wanted = PermissionSet::default();
    for name in &permissions {
        let id = catalogue.id(name).ok_or_else(|| {
            Error::invalid(
                "permissions",
                format!("unknown permission `{name}` (RolesService.ListPermissions lists them)"),
            )
        })?;
        wanted.insert(id);
    }
    let scope = workspaces::validate_scope(&tx, &ws, scope).await?;
    let held_until = authorize::may_hold_credential(
        conn,
        caller,
        &ws,
        &power,
        &catalogue,
        &wanted,
        scope.as_ref(),
    )
    .await?;
    if let Some(until_ms) = held_until {
        // Whole seconds, rounded down: `exp` never passes the grant's expiry.
        expires_at = expires_at.min(until_ms.div_euclid(1000));
    }
    let key = signing_key(settings, conn).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let scope_json = scope.as_ref().map(scope_claim);
    let sub = subject(&caller.principal);
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&ws.organization_id),
            action: "credential.issue",
            target_type: "workspace",
            target_id: &ws.id,
            details: json!({
                "credential_id": id,
                "key_id": key.kid(),
                "subject": sub,
                "permissions": permissions,
                "scope": scope_json,
                "expires_at": expires_at,
            }),
        },
    );
    let revision = tx.commit().await?;
    let claims = Claims {
        issuer: &settings.issuer,
        subject: sub,
        organization: &ws.organization_id,
        workspace: &ws.id,
        permissions: &permissions,
        scope: scope_json,
        issued_at,
        expires_at,
        id: &id,
        revision,
    };
    let token = key.sign(&claims.to_json());
    Ok(Issued {
        token,
        key_id: key.kid().to_owned(),
        id,
        workspace_id: ws.id,
        permissions,
        scope,
        expires_at_ms: expires_at.saturating_mul(1000),
        revision,
    })
}

/// A scope as the `scope` claim: `{"conditions": [{"key", "values"}]}`.
fn scope_claim(scope: &Scope) -> serde_json::Value {
    json!({
        "conditions": scope
            .conditions
            .iter()
            .map(|c| json!({ "key": c.key, "values": c.values }))
            .collect::<Vec<_>>(),
    })
}

/// The key that signs now: the file's, or the current one in storage
/// (read through `conn`, the issuing change).
async fn signing_key<C: Reads>(settings: &CredentialSettings, conn: &C) -> Result<Arc<KeyPair>> {
    if let Some(key) = &settings.key_file {
        return Ok(key.clone());
    }
    let row = signing_keys::current(conn)
        .await?
        .ok_or_else(|| internal("no current signing key in storage"))?;
    Ok(Arc::new(stored_key(&row)?))
}

/// A stored key, checked: stored data that does not parse fails closed.
fn stored_key(row: &signing_key::Model) -> Result<KeyPair> {
    let key = KeyPair::from_stored(&row.private_key)
        .map_err(|e| internal(&format!("stored signing key `{}`: {e}", row.id)))?;
    if key.kid() != row.id || key.public_key() != row.public_key {
        return Err(internal(&format!(
            "stored signing key `{}` does not match its id or public key",
            row.id
        )));
    }
    Ok(key)
}

fn internal(detail: &str) -> Error {
    Error::Store(StoreError::Internal(detail.to_owned()))
}

/// Makes the first signing key if storage holds no current one. Two
/// replicas starting at once both try; the unique `current_key` lets one
/// win, and the other keeps the winner's.
pub async fn ensure_signing_key(store: &Store) -> Result<()> {
    if signing_keys::current(store.db()).await?.is_some() {
        return Ok(());
    }
    let key = KeyPair::generate().map_err(|e| internal(&e.to_string()))?;
    let tx = Tx::detached(store).await?;
    match signing_keys::insert(tx.conn(), new_row(&key)).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    audit::record(
        &tx,
        &Actor::system("start-up"),
        Change {
            organization_id: None,
            action: "signing_key.create",
            target_type: "signing_key",
            target_id: key.kid(),
            details: json!({}),
        },
    );
    match tx.commit().await {
        Ok(_) => {
            tracing::info!(
                key_id = key.kid(),
                "created the first credential signing key"
            );
            Ok(())
        }
        // SQLite may find the other replica's key only when committing.
        Err(Error::Store(StoreError::Conflict(_))) => Ok(()),
        Err(e) => Err(e),
    }
}

fn new_row(key: &KeyPair) -> signing_key::Model {
    signing_key::Model {
        id: key.kid().to_owned(),
        private_key: key.private_key(),
        public_key: key.public_key(),
        current_key: Some(1),
        created_at: now_ms(),
        retired_at: None,
    }
}

/// A rotation: the new key's id, the retired one's (if there was one), and
/// the revision.
#[derive(Clone, Debug)]
pub struct Rotated {
    pub key_id: String,
    pub retired_key_id: Option<String>,
    pub revision: u64,
}

/// Rotates the signing key for a platform account (`RotateSigningKey`).
pub async fn rotate_signing_key(state: &AppState, caller: &Caller) -> Result<Rotated> {
    let tx = Tx::begin(state, caller).await?;
    authorize::platform(tx.conn(), caller, PlatformPower::RotateSigningKeys).await?;
    if state.settings.credentials.key_file.is_some() {
        return Err(Error::FailedPrecondition(
            "the signing key comes from --signing-key-file: rotate it by replacing the file on every replica".into(),
        ));
    }
    rotate_in(tx, &Actor::of(caller)).await
}

/// Rotates the signing key from the command line (`portcullis rotate-signing-key`).
pub async fn rotate_signing_key_offline(store: &Store) -> Result<Rotated> {
    let tx = Tx::detached(store).await?;
    rotate_in(tx, &Actor::system("rotate-signing-key")).await
}

async fn rotate_in(tx: Tx, actor: &Actor) -> Result<Rotated> {
    let key = KeyPair::generate().map_err(|e| internal(&e.to_string()))?;
    let conn = tx.conn();
    let now = now_ms();
    let retired = signing_keys::current(conn).await?.map(|k| k.id);
    signing_keys::retire_current(conn, now).await?;
    let retention = i64::try_from(RETIRED_KEY_RETENTION.as_millis()).unwrap_or(i64::MAX);
    signing_keys::delete_retired(conn, now.saturating_sub(retention)).await?;
    signing_keys::insert(conn, new_row(&key))
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => Error::FailedPrecondition(
                "signing key: another rotation committed at the same time; its key signs now"
                    .into(),
            ),
            e => e.into(),
        })?;
    audit::record(
        &tx,
        actor,
        Change {
            organization_id: None,
            action: "signing_key.rotate",
            target_type: "signing_key",
            target_id: key.kid(),
            details: json!({ "retired_key_id": retired }),
        },
    );
    let revision = tx.commit().await?;
    tracing::info!(key_id = key.kid(), retired_key_id = ?retired, "rotated the credential signing key");
    Ok(Rotated {
        key_id: key.kid().to_owned(),
        retired_key_id: retired,
        revision,
    })
}

/// The keys that verify credentials now: the current one and the retired
/// ones whose credentials may not all have expired. A stored public key
/// that does not parse or match its id is left out (and logged).
pub async fn published_keys(state: &AppState) -> Result<Vec<PublishedKey>> {
    let settings = &state.settings.credentials;
    if let Some(key) = &settings.key_file {
        return Ok(vec![PublishedKey {
            id: key.kid().to_owned(),
            public_key: key.public_key(),
            current: true,
            retired_at: None,
        }]);
    }
    let window = settings.max_ttl + RETIRED_KEY_GRACE;
    let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let retired_after = now_ms().saturating_sub(window);
    let mut rows = signing_keys::published(state.store.db(), retired_after).await?;
    if rows.is_empty() {
        // Asked before start-up made the first key: make it now.
        ensure_signing_key(&state.store).await?;
        rows = signing_keys::published(state.store.db(), retired_after).await?;
    }
    Ok(rows
        .into_iter()
        .filter(|row| {
            let sound =
                jwt::is_public_key(&row.public_key) && jwt::thumbprint(&row.public_key) == row.id;
            if !sound {
                tracing::error!(key_id = %row.id, "stored signing key is damaged; not published");
            }
            sound
        })
        .map(|row| PublishedKey {
            current: row.current_key == Some(1),
            id: row.id,
            public_key: row.public_key,
            retired_at: row.retired_at,
        })
        .collect())
}

/// The JSON Web Key Set of [`published_keys`].
pub async fn jwks(state: &AppState) -> Result<String> {
    let keys = published_keys(state).await?;
    Ok(jwt::jwks(
        keys.iter().map(|k| (k.id.as_str(), k.public_key.as_str())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_default_and_stay_within_bounds() {
        let settings = CredentialSettings::default();
        assert_eq!(lifetime(&settings, None).unwrap(), settings.default_ttl);
        assert_eq!(
            lifetime(&settings, Some(1)).unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(lifetime(&settings, Some(3600)).unwrap(), settings.max_ttl);
        for bad in [0, 3601, u32::MAX] {
            let err = lifetime(&settings, Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("ttl_seconds: "), "{err}");
        }
    }

    #[test]
    fn permission_lists_are_bounded_and_deduplicated() {
        assert!(permission_names(Vec::new()).is_err());
        assert!(permission_names(vec!["a:read".into(); MAX_PERMISSIONS + 1]).is_err());
        assert_eq!(
            permission_names(vec!["b:read".into(), "a:read".into(), "b:read".into()]).unwrap(),
            ["a:read", "b:read"]
        );
    }
}
