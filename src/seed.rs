//! Synthetic data sets for benchmarks: an organization with many users,
//! workspaces, teams and grants, written with bulk inserts straight into
//! storage (the API would take hours for a million grants). Used by the
//! criterion benches and the `loadgen` binary; never by the server.

use sea_orm::{ConnectionTrait, TransactionTrait};

use crate::{
    bootstrap::{self, BootstrapInput},
    error::Result,
    store::{Store, new_id, now_ms},
};

/// How big a data set to make.
#[derive(Clone, Copy, Debug)]
pub struct SeedSize {
    pub users: usize,
    pub workspaces: usize,
    pub teams: usize,
    pub grants: usize,
}

/// What was made, for choosing requests.
#[derive(Clone, Debug)]
pub struct Seeded {
    pub organization_id: String,
    /// An organization-scoped service key of an `ORG_ADMIN` service account.
    pub key: String,
    pub users: Vec<String>,
    pub workspaces: Vec<String>,
    /// (user, workspace) pairs where the user holds a direct unscoped grant.
    pub granted: Vec<(String, String)>,
}

/// A small deterministic generator (xorshift64*), so runs are repeatable.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

const ROLES: [&str; 3] = ["WORKSPACE_ADMIN", "WORKSPACE_EDITOR", "WORKSPACE_VIEWER"];
const CHUNK: usize = 1000;

async fn insert_rows(store: &Store, table: &str, columns: &str, rows: Vec<String>) -> Result<()> {
    let txn = store.db().begin().await?;
    for chunk in rows.chunks(CHUNK) {
        let sql = format!("INSERT INTO {table} ({columns}) VALUES {}", chunk.join(","));
        txn.execute_unprepared(&sql).await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Bootstraps an empty database and fills it with a data set of `size`.
pub async fn seed(store: &Store, size: SeedSize, rng_seed: u64) -> Result<Seeded> {
    let boot = bootstrap::run(
        store,
        &BootstrapInput {
            organization_name: "bench".into(),
            admin_email: "admin@bench.test".into(),
            admin_subject: "bench|admin".into(),
        },
    )
    .await?;
    let org = boot.organization_id.clone();
    let now = now_ms();
    let mut rng = Rng::new(rng_seed);

    let users: Vec<String> = (0..size.users).map(|_| new_id()).collect();
    let homes: Vec<String> = (0..size.users).map(|_| new_id()).collect();
    let workspaces: Vec<String> = (0..size.workspaces).map(|_| new_id()).collect();
    let teams: Vec<String> = (0..size.teams).map(|_| new_id()).collect();

    insert_rows(
        store,
        "users",
        "id, external_subject, email, created_at",
        users
            .iter()
            .enumerate()
            .map(|(i, u)| format!("('{u}', 'seed|{i}', 'user{i}@bench.test', {now})"))
            .collect(),
    )
    .await?;
    let mut ws_rows: Vec<String> = homes
        .iter()
        .zip(&users)
        .enumerate()
        .map(|(i, (w, u))| format!("('{w}', '{org}', 'home-{i}', 'home {i}', TRUE, '{u}', {now})"))
        .collect();
    ws_rows.extend(
        workspaces.iter().enumerate().map(|(i, w)| {
            format!("('{w}', '{org}', 'ws-{i}', 'workspace {i}', FALSE, NULL, {now})")
        }),
    );
    insert_rows(
        store,
        "workspaces",
        "id, organization_id, key, name, is_default, owner_user_id, created_at",
        ws_rows,
    )
    .await?;
    insert_rows(
        store,
        "memberships",
        "organization_id, user_id, role, default_workspace_id, created_at",
        users
            .iter()
            .zip(&homes)
            .map(|(u, w)| format!("('{org}', '{u}', 'ORG_USER', '{w}', {now})"))
            .collect(),
    )
    .await?;
    insert_rows(
        store,
        "teams",
        "id, organization_id, name, created_at",
        teams
            .iter()
            .enumerate()
            .map(|(i, t)| format!("('{t}', '{org}', 'team-{i}', {now})"))
            .collect(),
    )
    .await?;
    if !teams.is_empty() {
        insert_rows(
            store,
            "team_members",
            "team_id, user_id, organization_id, created_at",
            users
                .iter()
                .enumerate()
                .map(|(i, u)| format!("('{}', '{u}', '{org}', {now})", teams[i % teams.len()]))
                .collect(),
        )
        .await?;
    }
    insert_rows(
        store,
        "applications",
        "workspace_id, name, created_at",
        workspaces
            .iter()
            .map(|w| format!("('{w}', 'app', {now})"))
            .collect(),
    )
    .await?;

    // Every member administers their default workspace; the rest of the
    // grants are spread over shared workspaces: mostly direct, some to
    // teams, some scoped to the workspace's application.
    let mut grant_rows: Vec<String> = users
        .iter()
        .zip(&homes)
        .map(|(u, w)| {
            format!(
                "('{}', '{org}', '{w}', 'user', '{u}', 'WORKSPACE_ADMIN', NULL, {now})",
                new_id()
            )
        })
        .collect();
    let mut granted = Vec::new();
    let extra = size.grants.saturating_sub(users.len());
    if !workspaces.is_empty() && !users.is_empty() {
        for _ in 0..extra {
            let ws = &workspaces[rng.below(workspaces.len())];
            let role = ROLES[rng.below(ROLES.len())];
            let roll = rng.below(100);
            let (subject_type, subject) = if roll < 10 && !teams.is_empty() {
                ("team", teams[rng.below(teams.len())].clone())
            } else {
                ("user", users[rng.below(users.len())].clone())
            };
            let scope = if roll >= 95 {
                r#"'{"conditions":[{"key":"Application","values":["app"]}]}'"#.to_owned()
            } else {
                "NULL".to_owned()
            };
            if subject_type == "user" && scope == "NULL" && granted.len() < 100_000 {
                granted.push((subject.clone(), ws.clone()));
            }
            grant_rows.push(format!(
                "('{}', '{org}', '{ws}', '{subject_type}', '{subject}', '{role}', {scope}, {now})",
                new_id()
            ));
        }
    }
    insert_rows(
        store,
        "grants",
        "id, organization_id, workspace_id, subject_type, subject_id, role, scope, created_at",
        grant_rows,
    )
    .await?;
    Ok(Seeded {
        organization_id: org,
        key: boot.key,
        users,
        workspaces,
        granted,
    })
}
