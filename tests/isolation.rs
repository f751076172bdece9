//! Tenant isolation, by construction: no key reaches beyond its power.
//!
//! The world is built with the platform key (bootstrap's), the way the
//! product's identity-provider integration builds it: users registered,
//! added to organizations, and everything else made by each organization's
//! admin user acting through `x-act-as-user`. Two organizations, P (the
//! bootstrap organization) and Q (a shared one a user created), each hold
//! users of every role with personal access tokens, workspaces, a team, grants,
//! a custom role, applications, registered resources, settings and
//! organization default settings, an invite,
//! service accounts with keys of every scope, a revoked key, a service
//! account confined to ws1 with its key, and a workspace invite into ws1
//! (the server runs with workspace invites on). Every string
//! of the world carries its organization's marker (`q-secret-…`,
//! `…@q.victim.test`, `idp|q-…`), so that a leak is found in bytes.
//!
//! Then every key attacks, each on a copy of the world with a server of its
//! own, with requests generated from the served descriptors
//! (`harness::attack`):
//! * across organizations: each key of P attacks Q and the platform account,
//!   each key of Q attacks P and the platform account; an attacker may change
//!   only rows of its own organization that name nothing of the victim's;
//! * inside its organization: the workspace-scoped admin key, the ORG_USER and
//!   ORG_VIEWER tokens and the ORG_USER service key attack what lies outside
//!   their power (`within`, where each one's reach and secrets are defined).
//!
//! The checks (see `harness::attack`): rows outside the attacker's reach are
//! unchanged, answers show nothing the attacker may not read, every call is
//! answered, foreign objects get the answer unknown ones get, and the victim's
//! own decisions (asked with its own key) are those storage gives. All
//! violations are collected and reported at the end, grouped (every group on
//! stderr, the first ones in the panic); `--nocapture` also shows the codes
//! per method and phase and the time each attacker took.
//!
//! To look closer: `PORTCULLIS_ISOLATION_ATTACKER=<part of a label>` and
//! `PORTCULLIS_ISOLATION_METHOD=<part of a path>` narrow the run,
//! `PORTCULLIS_ISOLATION_TRACE=1` shows every call and its answer,
//! `PORTCULLIS_ISOLATION_JOBS=<n>` sets how many attackers run at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::{collections::HashMap, sync::Arc, time::Instant};

use harness::{
    Backend, TestServer, as_user,
    attack::{
        Arena, Attacker, Battery, Db, Meta, Named, Original, Outcome, Poisons, Reach, Report,
        Schema, Stage, Targets, Victim, call, named,
    },
    req,
};
use portcullis::{config::Settings, proto::v1 as pb};

/// A key: its id and the whole secret.
#[derive(Clone, Debug)]
struct Key {
    id: String,
    secret: String,
}

/// A member of an organization.
#[derive(Clone, Debug)]
struct Person {
    id: String,
    home: String,
    pat: Option<Key>,
}

/// One organization of the world and everything in it.
#[derive(Clone, Debug)]
struct Org {
    /// `p` or `q`: the marker of its strings.
    tag: &'static str,
    /// `P` or `Q`: how reports name it.
    name: &'static str,
    id: String,
    admin: Person,
    user: Person,
    viewer: Person,
    /// An ORG_USER without a key: editor of ws2, custom role in ws1.
    editor: Person,
    /// Members bootstrap made (P's first admin).
    first_admin: Option<Person>,
    ws1: String,
    ws2: String,
    /// A workspace the organization's service keys may name as their own.
    ws3: String,
    team: String,
    role: String,
    invite: String,
    /// A workspace invite into ws1.
    ws_invite: String,
    grants: Vec<Named>,
    sa_admin: String,
    sa_scoped: String,
    sa_user: String,
    /// A service account confined to ws1 (WORKSPACE_VIEWER there).
    sa_confined: String,
    key_admin: Key,
    key_scoped: Key,
    key_user_sa: Key,
    key_revoked: Key,
    /// The confined account's key: it reaches ws1 only.
    key_confined: Key,
}

/// Both organizations and the platform account.
struct World {
    p: Org,
    q: Org,
    platform_sa: String,
    platform_key: String,
}

// ---------------------------------------------------------------------------
// Building the world.

async fn register(s: &TestServer, tag: &str, who: &str) -> String {
    s.identity()
        .create_user(req(
            pb::CreateUserRequest {
                external_subject: format!("idp|{tag}-{who}"),
                email: format!("{tag}-{who}@{tag}.victim.test"),
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id
}

async fn add_member(
    s: &TestServer,
    org: &str,
    admin: &str,
    user: &str,
    role: pb::OrgRole,
) -> String {
    // The platform (the identity-provider integration) adds members directly.
    let _ = admin;
    s.identity()
        .add_member(req(
            pb::AddMemberRequest {
                organization_id: org.into(),
                user_id: user.into(),
                role: role as i32,
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap()
        .default_workspace_id
}

async fn pat(s: &TestServer, org: &str, user: &str, description: String) -> Key {
    let r = s
        .identity()
        .create_personal_access_token(as_user(
            s,
            pb::CreatePersonalAccessTokenRequest {
                organization_id: org.into(),
                description,
                expires_at: None,
            },
            user,
        ))
        .await
        .unwrap()
        .into_inner();
    Key {
        id: r.api_key.unwrap().id,
        secret: r.key,
    }
}

async fn service_account(
    s: &TestServer,
    org: &str,
    admin: &str,
    name: String,
    role: pb::OrgRole,
) -> String {
    s.identity()
        .create_service_account(as_user(
            s,
            pb::CreateServiceAccountRequest {
                organization_id: org.into(),
                name,
                role: role as i32,
                ..Default::default()
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .service_account
        .unwrap()
        .id
}

async fn service_key(
    s: &TestServer,
    org: &str,
    admin: &str,
    account: &str,
    description: String,
    workspaces: &[&str],
) -> Key {
    let scope = if workspaces.is_empty() {
        pb::ServiceKeyScope::Organization
    } else {
        pb::ServiceKeyScope::Workspaces
    };
    let r = s
        .identity()
        .create_service_key(as_user(
            s,
            pb::CreateServiceKeyRequest {
                organization_id: org.into(),
                service_account_id: account.into(),
                description,
                scope: scope as i32,
                workspace_ids: workspaces.iter().map(|w| (*w).to_owned()).collect(),
                expires_at: None,
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner();
    Key {
        id: r.api_key.unwrap().id,
        secret: r.key,
    }
}

async fn workspace(s: &TestServer, org: &str, admin: &str, key: String) -> String {
    s.workspaces()
        .create_workspace(as_user(
            s,
            pb::CreateWorkspaceRequest {
                organization_id: org.into(),
                name: format!("{key}-name"),
                key,
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .workspace
        .unwrap()
        .id
}

async fn grant(
    s: &TestServer,
    admin: &str,
    ws: &str,
    subject: pb::subject::Kind,
    role: &str,
    scope: Option<pb::Scope>,
) -> String {
    s.workspaces()
        .grant_access(as_user(
            s,
            pb::GrantAccessRequest {
                workspace_id: ws.into(),
                subject: Some(pb::Subject {
                    kind: Some(subject),
                }),
                role: role.into(),
                scope,
                expires_at: None,
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap()
        .id
}

fn tag(key: &str, value: &str) -> pb::Tag {
    pb::Tag {
        key: key.into(),
        value: value.into(),
    }
}

/// Builds organization `tag`: P is the bootstrap organization, Q a shared
/// one its admin creates.
async fn build_org(s: &TestServer, tag_: &'static str, name: &'static str) -> Org {
    let t = tag_;
    let admin_id = register(s, t, "admin").await;
    let (org, admin_home, first_admin) = if name == "P" {
        let org = s.boot.organization_id.clone();
        let home = s
            .identity()
            .add_member(req(
                pb::AddMemberRequest {
                    organization_id: org.clone(),
                    user_id: admin_id.clone(),
                    role: pb::OrgRole::OrgAdmin as i32,
                },
                s.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .member
            .unwrap()
            .default_workspace_id;
        let first = s
            .identity()
            .list_members(req(
                pb::ListMembersRequest {
                    organization_id: org.clone(),
                    ..Default::default()
                },
                s.key(),
            ))
            .await
            .unwrap()
            .into_inner()
            .members
            .into_iter()
            .find(|m| m.user_id == s.boot.admin_user_id)
            .unwrap();
        let first = Person {
            id: first.user_id,
            home: first.default_workspace_id,
            pat: None,
        };
        (org, home, Some(first))
    } else {
        let r = s
            .identity()
            .create_organization(as_user(
                s,
                pb::CreateOrganizationRequest {
                    name: format!("{t}-secret-org"),
                    plan: pb::Plan::Enterprise as i32,
                },
                &admin_id,
            ))
            .await
            .unwrap()
            .into_inner();
        (
            r.organization.unwrap().id,
            r.member.unwrap().default_workspace_id,
            None,
        )
    };
    let a = admin_id.as_str();
    let mut people = Vec::new();
    for who in ["user", "viewer", "editor"] {
        let id = register(s, t, who).await;
        let home = add_member(s, &org, a, &id, pb::OrgRole::OrgUser).await;
        people.push(Person {
            id,
            home,
            pat: None,
        });
    }
    let mut admin = Person {
        id: admin_id.clone(),
        home: admin_home,
        pat: None,
    };
    admin.pat = Some(pat(s, &org, a, format!("{t}-secret-pat-admin")).await);
    let [mut user, mut viewer, editor] = people.try_into().unwrap();
    user.pat = Some(pat(s, &org, &user.id, format!("{t}-secret-pat-user")).await);
    // A viewer may not create a token: made while ORG_USER, then demoted.
    viewer.pat = Some(pat(s, &org, &viewer.id, format!("{t}-secret-pat-viewer")).await);
    s.identity()
        .update_member_role(as_user(
            s,
            pb::UpdateMemberRoleRequest {
                organization_id: org.clone(),
                user_id: viewer.id.clone(),
                role: pb::OrgRole::OrgViewer as i32,
            },
            a,
        ))
        .await
        .unwrap();

    let ws1 = workspace(s, &org, a, format!("{t}-secret-ws1")).await;
    let ws2 = workspace(s, &org, a, format!("{t}-secret-ws2")).await;
    let ws3 = workspace(s, &org, a, format!("{t}-secret-ws3")).await;

    let team = s
        .identity()
        .create_team(as_user(
            s,
            pb::CreateTeamRequest {
                organization_id: org.clone(),
                name: format!("{t}-secret-team"),
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap()
        .id;
    s.identity()
        .add_team_member(as_user(
            s,
            pb::AddTeamMemberRequest {
                organization_id: org.clone(),
                team_id: team.clone(),
                user_id: viewer.id.clone(),
                expires_at: None,
            },
            a,
        ))
        .await
        .unwrap();
    let role = s
        .roles()
        .create_role(as_user(
            s,
            pb::CreateRoleRequest {
                organization_id: org.clone(),
                name: format!("{t}-secret-role"),
                description: format!("{t}-secret-role-text"),
                permissions: vec!["prompts:read".into(), "prompts:update".into()],
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap()
        .id;
    s.roles()
        .register_resource_type(as_user(
            s,
            pb::RegisterResourceTypeRequest {
                organization_id: org.clone(),
                resource_type: format!("{t}_secret_widgets"),
                actions: vec!["read".into(), "spin".into()],
            },
            a,
        ))
        .await
        .unwrap();
    for (ws, app) in [(&ws1, "one"), (&ws2, "two"), (&admin.home, "home")] {
        s.workspaces()
            .create_application(as_user(
                s,
                pb::CreateApplicationRequest {
                    workspace_id: ws.clone(),
                    name: format!("{t}-secret-app-{app}"),
                },
                a,
            ))
            .await
            .unwrap();
    }
    for (ws, n, env) in [(&ws1, "one", "prod"), (&ws2, "two", "dev")] {
        s.workspaces()
            .set_resource_tags(as_user(
                s,
                pb::SetResourceTagsRequest {
                    workspace_id: ws.clone(),
                    resource_type: "prompts".into(),
                    resource_id: format!("{t}-secret-res-{n}"),
                    tags: vec![
                        tag("Environment", env),
                        tag("Application", &format!("{t}-secret-app-{n}")),
                        tag("Owner", &format!("{t}-secret-owner-{n}")),
                    ],
                },
                a,
            ))
            .await
            .unwrap();
    }
    for (ws, days, limit) in [(&ws1, 30, 1000), (&ws2, 60, 2000)] {
        s.workspaces()
            .update_settings(as_user(
                s,
                pb::UpdateSettingsRequest {
                    workspace_id: ws.clone(),
                    data_retention_days: Some(days),
                    monthly_trace_limit: Some(limit),
                    clear: vec![],
                },
                a,
            ))
            .await
            .unwrap();
    }
    // Organization defaults, different in each organization: ws3 sets none
    // of its own and inherits them.
    let (days, limit) = if t == "p" { (90, 9000) } else { (180, 18000) };
    s.identity()
        .update_organization_settings(as_user(
            s,
            pb::UpdateOrganizationSettingsRequest {
                organization_id: org.clone(),
                data_retention_days: Some(days),
                monthly_trace_limit: Some(limit),
                clear: vec![],
            },
            a,
        ))
        .await
        .unwrap();
    let invite = s
        .identity()
        .create_invite(as_user(
            s,
            pb::CreateInviteRequest {
                organization_id: org.clone(),
                email: format!("{t}-invitee@{t}.victim.test"),
                role: pb::OrgRole::OrgUser as i32,
                ..Default::default()
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner()
        .invite
        .unwrap()
        .id;

    // Made with the admin's own token: it names the admin, not the platform
    // account that builds the world.
    let ws_invite = s
        .identity()
        .create_invite(req(
            pb::CreateInviteRequest {
                organization_id: org.clone(),
                email: format!("{t}-ws-invitee@{t}.victim.test"),
                workspace_id: ws1.clone(),
                workspace_role: "WORKSPACE_VIEWER".into(),
                ..Default::default()
            },
            &admin.pat.as_ref().unwrap().secret,
        ))
        .await
        .unwrap()
        .into_inner()
        .invite
        .unwrap()
        .id;
    let sa_confined = s
        .identity()
        .create_service_account(as_user(
            s,
            pb::CreateServiceAccountRequest {
                name: format!("{t}-secret-sa-confined"),
                workspace_id: ws1.clone(),
                ..Default::default()
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner()
        .service_account
        .unwrap()
        .id;
    let key_confined = service_key(
        s,
        &org,
        a,
        &sa_confined,
        format!("{t}-secret-key-confined"),
        &[&ws1],
    )
    .await;

    let sa_admin = service_account(
        s,
        &org,
        a,
        format!("{t}-secret-sa-admin"),
        pb::OrgRole::OrgAdmin,
    )
    .await;
    let sa_scoped = service_account(
        s,
        &org,
        a,
        format!("{t}-secret-sa-scoped"),
        pb::OrgRole::OrgAdmin,
    )
    .await;
    let sa_user = service_account(
        s,
        &org,
        a,
        format!("{t}-secret-sa-user"),
        pb::OrgRole::OrgUser,
    )
    .await;
    let key_admin = service_key(s, &org, a, &sa_admin, format!("{t}-secret-key-admin"), &[]).await;
    let key_scoped = service_key(
        s,
        &org,
        a,
        &sa_scoped,
        format!("{t}-secret-key-scoped"),
        &[&ws1],
    )
    .await;
    let key_user_sa =
        service_key(s, &org, a, &sa_user, format!("{t}-secret-key-usersa"), &[]).await;
    let key_revoked = service_key(
        s,
        &org,
        a,
        &sa_admin,
        format!("{t}-secret-key-revoked"),
        &[],
    )
    .await;
    s.identity()
        .revoke_api_key(as_user(
            s,
            pb::RevokeApiKeyRequest {
                organization_id: org.clone(),
                api_key_id: key_revoked.id.clone(),
            },
            a,
        ))
        .await
        .unwrap();

    use pb::subject::Kind;
    let app_one = pb::Scope {
        conditions: Vec::new(),
        application: format!("{t}-secret-app-one"),
    };
    let grants = vec![
        named(
            format!("{name}.grant-team-ws1"),
            grant(
                s,
                a,
                &ws1,
                Kind::TeamId(team.clone()),
                "WORKSPACE_VIEWER",
                None,
            )
            .await,
        ),
        named(
            format!("{name}.grant-user-ws1"),
            grant(
                s,
                a,
                &ws1,
                Kind::UserId(user.id.clone()),
                "WORKSPACE_VIEWER",
                None,
            )
            .await,
        ),
        named(
            format!("{name}.grant-editor-ws1"),
            grant(
                s,
                a,
                &ws1,
                Kind::UserId(editor.id.clone()),
                &role,
                Some(app_one),
            )
            .await,
        ),
        named(
            format!("{name}.grant-editor-ws2"),
            grant(
                s,
                a,
                &ws2,
                Kind::UserId(editor.id.clone()),
                "WORKSPACE_EDITOR",
                None,
            )
            .await,
        ),
        named(
            format!("{name}.grant-confined-ws1"),
            grant(
                s,
                a,
                &ws1,
                Kind::ServiceAccountId(sa_confined.clone()),
                "WORKSPACE_VIEWER",
                None,
            )
            .await,
        ),
        named(
            format!("{name}.grant-sa-ws2"),
            grant(
                s,
                a,
                &ws2,
                Kind::ServiceAccountId(sa_user.clone()),
                "WORKSPACE_EDITOR",
                None,
            )
            .await,
        ),
    ];
    Org {
        tag: t,
        name,
        id: org,
        admin,
        user,
        viewer,
        editor,
        first_admin,
        ws1,
        ws2,
        ws3,
        team,
        role,
        invite,
        ws_invite,
        grants,
        sa_admin,
        sa_scoped,
        sa_user,
        sa_confined,
        key_admin,
        key_scoped,
        key_user_sa,
        key_revoked,
        key_confined,
    }
}

async fn build_world(s: &TestServer) -> World {
    let p = build_org(s, "p", "P").await;
    let q = build_org(s, "q", "Q").await;
    let platform_key = s
        .identity()
        .list_api_keys(req(pb::ListApiKeysRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .api_keys
        .into_iter()
        .find(|k| k.service_account_id == s.boot.service_account_id)
        .unwrap()
        .id;
    World {
        p,
        q,
        platform_sa: s.boot.service_account_id.clone(),
        platform_key,
    }
}

// ---------------------------------------------------------------------------
// What each attacker names, may touch and may read.

impl Org {
    fn l(&self, what: &str) -> String {
        format!("{}.{what}", self.name)
    }

    fn secret(&self, what: &str) -> String {
        format!("{}-secret-{what}", self.tag)
    }

    fn pat(p: &Person) -> &Key {
        p.pat.as_ref().unwrap()
    }

    /// Every id of the organization the world knows, labelled.
    fn ids(&self) -> Vec<Named> {
        let mut out = vec![
            named(self.l("org"), &self.id),
            named(self.l("ws1"), &self.ws1),
            named(self.l("ws2"), &self.ws2),
            named(self.l("ws3"), &self.ws3),
            named(self.l("team"), &self.team),
            named(self.l("role"), &self.role),
            named(self.l("invite"), &self.invite),
            named(self.l("ws-invite"), &self.ws_invite),
            named(self.l("sa-admin"), &self.sa_admin),
            named(self.l("sa-confined"), &self.sa_confined),
            named(self.l("key-confined"), &self.key_confined.id),
            named(self.l("sa-scoped"), &self.sa_scoped),
            named(self.l("sa-user"), &self.sa_user),
            named(self.l("key-admin"), &self.key_admin.id),
            named(self.l("key-scoped"), &self.key_scoped.id),
            named(self.l("key-usersa"), &self.key_user_sa.id),
            named(self.l("key-revoked"), &self.key_revoked.id),
        ];
        let mut people = vec![
            ("admin", &self.admin),
            ("user", &self.user),
            ("viewer", &self.viewer),
            ("editor", &self.editor),
        ];
        if let Some(first) = &self.first_admin {
            people.push(("first-admin", first));
        }
        for (who, p) in people {
            out.push(named(self.l(who), &p.id));
            out.push(named(self.l(&format!("{who}.home")), &p.home));
            if let Some(k) = &p.pat {
                out.push(named(self.l(&format!("pat-{who}")), &k.id));
            }
        }
        out.extend(self.grants.iter().cloned());
        out
    }

    /// `known`, the ids the world knows and every other id of a row the
    /// organization owns.
    async fn all_ids(&self, db: &Db, known: Vec<Named>) -> Vec<Named> {
        let mut out = known;
        out.extend(self.ids());
        for (table, column) in [
            ("workspaces", "id"),
            ("teams", "id"),
            ("service_accounts", "id"),
            ("api_keys", "id"),
            ("invites", "id"),
            ("grants", "id"),
            ("roles", "id"),
            ("memberships", "user_id"),
        ] {
            let sql = format!(
                "SELECT CAST({column} AS TEXT) AS v FROM {table} WHERE organization_id = '{}'",
                self.id
            );
            for (i, v) in db.column(&sql, "v").await.into_iter().enumerate() {
                if !out.iter().any(|n| n.value == v) {
                    out.push(named(format!("{}.{table}#{i}", self.name), v));
                }
            }
        }
        out
    }

    /// Strings no other organization may read.
    fn markers(&self) -> Vec<String> {
        let t = self.tag;
        let mut m = vec![
            format!("{t}-secret-"),
            format!("{t}_secret_"),
            format!("@{t}.victim.test"),
            format!("idp|{t}-"),
        ];
        if self.first_admin.is_some() {
            m.extend(["admin@acme.test".to_owned(), "idp|admin".to_owned()]);
        }
        m
    }

    fn applications(&self) -> Vec<Named> {
        ["one", "two", "home"]
            .iter()
            .map(|a| {
                named(
                    self.l(&format!("app-{a}")),
                    self.secret(&format!("app-{a}")),
                )
            })
            .collect()
    }

    fn resources(&self) -> Vec<Named> {
        ["one", "two"]
            .iter()
            .map(|r| {
                named(
                    self.l(&format!("res-{r}")),
                    self.secret(&format!("res-{r}")),
                )
            })
            .collect()
    }

    fn users(&self) -> Vec<Named> {
        vec![
            named(self.l("admin"), &self.admin.id),
            named(self.l("user"), &self.user.id),
            named(self.l("viewer"), &self.viewer.id),
            named(self.l("editor"), &self.editor.id),
        ]
    }

    fn accounts(&self) -> Vec<Named> {
        vec![
            named(self.l("sa-admin"), &self.sa_admin),
            named(self.l("sa-scoped"), &self.sa_scoped),
            named(self.l("sa-user"), &self.sa_user),
            named(self.l("sa-confined"), &self.sa_confined),
        ]
    }

    fn keys(&self) -> Vec<Named> {
        vec![
            named(self.l("key-admin"), &self.key_admin.id),
            named(self.l("pat-admin"), &Self::pat(&self.admin).id),
            named(self.l("key-scoped"), &self.key_scoped.id),
            named(self.l("key-usersa"), &self.key_user_sa.id),
            named(self.l("pat-user"), &Self::pat(&self.user).id),
            named(self.l("pat-viewer"), &Self::pat(&self.viewer).id),
            named(self.l("key-confined"), &self.key_confined.id),
        ]
    }

    /// Its keys that attack: (label, key, principal, own workspace).
    fn keys_that_attack(&self) -> Vec<(String, &Key, &str, Option<&str>)> {
        let n = self.name;
        vec![
            (
                format!("{n} ORG_ADMIN PAT"),
                Self::pat(&self.admin),
                self.admin.id.as_str(),
                Some(self.admin.home.as_str()),
            ),
            (
                format!("{n} ORG_USER PAT"),
                Self::pat(&self.user),
                &self.user.id,
                Some(&self.user.home),
            ),
            (
                format!("{n} ORG_VIEWER PAT"),
                Self::pat(&self.viewer),
                &self.viewer.id,
                Some(&self.viewer.home),
            ),
            (
                format!("{n} ORG_ADMIN org key"),
                &self.key_admin,
                &self.sa_admin,
                Some(&self.ws3),
            ),
            (
                format!("{n} ORG_ADMIN ws1 key"),
                &self.key_scoped,
                &self.sa_scoped,
                None,
            ),
            (
                format!("{n} ORG_USER org key"),
                &self.key_user_sa,
                &self.sa_user,
                Some(&self.ws3),
            ),
            (
                format!("{n} confined ws1 key"),
                &self.key_confined,
                &self.sa_confined,
                None,
            ),
            (
                format!("{n} revoked key"),
                &self.key_revoked,
                &self.sa_admin,
                Some(&self.ws3),
            ),
        ]
    }
}

impl World {
    fn platform(&self) -> Vec<Named> {
        vec![
            named("platform.sa", &self.platform_sa),
            named("platform.key", &self.platform_key),
        ]
    }

    fn names(&self) -> Vec<Named> {
        let mut out = self.platform();
        out.extend(self.p.ids());
        out.extend(self.q.ids());
        out
    }
}

/// Every key of `attacking` against `victim` and the platform account.
async fn across(world: &World, attacking: &Org, victim: &Org, db: &Db) -> Vec<Attacker> {
    let protected = victim.all_ids(db, world.platform()).await;
    let v = victim;
    let mut accounts = vec![named("platform.sa", &world.platform_sa)];
    accounts.extend(v.accounts());
    let mut keys = vec![named("platform.key", &world.platform_key)];
    keys.extend(v.keys());
    let base = Targets {
        organizations: vec![named(v.l("org"), &v.id)],
        workspaces: vec![
            named(v.l("ws1"), &v.ws1),
            named(v.l("ws2"), &v.ws2),
            named(v.l("admin.home"), &v.admin.home),
            named(v.l("user.home"), &v.user.home),
        ],
        users: v.users(),
        teams: vec![named(v.l("team"), &v.team)],
        service_accounts: accounts,
        api_keys: keys,
        invites: vec![
            named(v.l("invite"), &v.invite),
            named(v.l("ws-invite"), &v.ws_invite),
        ],
        grants: v.grants.clone(),
        roles: vec![named(v.l("role"), &v.role)],
        secrets: vec![
            named(v.l("key-admin.secret"), &v.key_admin.secret),
            named(v.l("pat-user.secret"), &Org::pat(&v.user).secret),
        ],
        applications: v.applications(),
        resources: v.resources(),
        own_organization: Some(named(attacking.l("org"), &attacking.id)),
        own_workspace: None,
    };
    attacking
        .keys_that_attack()
        .into_iter()
        .map(|(label, key, principal, own)| Attacker {
            key: key.secret.clone(),
            principal: principal.to_owned(),
            organization: attacking.id.clone(),
            reach: Reach::Organization,
            targets: Targets {
                own_workspace: own.map(|w| named(format!("{}.own-workspace", attacking.name), w)),
                ..base.clone()
            },
            protected: protected.clone(),
            markers: v.markers(),
            allowed: Vec::new(),
            twin: true,
            minimal: label.ends_with("revoked key"),
            label,
        })
        .collect()
}

/// The lesser keys of `x`, each against what lies outside its power.
async fn within(world: &World, x: &Org, other: &Org, db: &Db) -> Vec<Attacker> {
    let protected = other.all_ids(db, world.platform()).await;
    let t = x.tag;
    let platform_here = x.first_admin.is_some();
    let mut accounts = Vec::new();
    let mut all_keys = Vec::new();
    if platform_here {
        accounts.push(named("platform.sa", &world.platform_sa));
        all_keys.push(named("platform.key", &world.platform_key));
    }
    accounts.extend(x.accounts());
    all_keys.extend(x.keys());
    let keys_but = |own: &str| -> Vec<Named> {
        all_keys
            .iter()
            .filter(|k| k.value != own)
            .cloned()
            .collect()
    };
    let ws = |list: &[(&str, &str)]| -> Vec<Named> {
        list.iter().map(|(l, v)| named(x.l(l), *v)).collect()
    };
    let base = Targets {
        organizations: vec![named(x.l("org"), &x.id)],
        workspaces: Vec::new(),
        users: x.users(),
        teams: vec![named(x.l("team"), &x.team)],
        service_accounts: accounts,
        api_keys: Vec::new(),
        invites: vec![
            named(x.l("invite"), &x.invite),
            named(x.l("ws-invite"), &x.ws_invite),
        ],
        grants: x.grants.clone(),
        roles: vec![named(x.l("role"), &x.role)],
        secrets: vec![named(x.l("key-admin.secret"), &x.key_admin.secret)],
        applications: x.applications(),
        resources: x.resources(),
        own_organization: None,
        own_workspace: None,
    };
    let off_limits = |extra: &[&str]| -> Vec<String> {
        let mut m: Vec<String> = ["app-home", "key-", "pat-", "sa-"]
            .iter()
            .map(|s| x.secret(s))
            .collect();
        m.push(format!("{t}-invitee@"));
        m.push(format!("{t}-ws-invitee@"));
        m.extend(extra.iter().map(|s| x.secret(s)));
        m
    };
    let mut scoped_markers = off_limits(&["app-two", "res-two", "owner-two", "team"]);
    scoped_markers.extend([format!("@{t}.victim.test"), format!("idp|{t}-")]);
    if platform_here {
        scoped_markers.extend(["admin@acme.test".to_owned(), "idp|admin".to_owned()]);
    }
    let attacker = |label: String,
                    key: &Key,
                    principal: &str,
                    reach: Reach,
                    workspaces,
                    markers,
                    allowed: Vec<String>| Attacker {
        label,
        key: key.secret.clone(),
        principal: principal.to_owned(),
        organization: x.id.clone(),
        reach,
        targets: Targets {
            workspaces,
            api_keys: keys_but(&key.id),
            ..base.clone()
        },
        protected: protected.clone(),
        markers,
        allowed,
        twin: false,
        minimal: false,
    };
    let n = x.name;
    vec![
        attacker(
            format!("{n} ORG_ADMIN ws1 key"),
            &x.key_scoped,
            &x.sa_scoped,
            Reach::Workspace(x.ws1.clone()),
            ws(&[("ws2", &x.ws2), ("admin.home", &x.admin.home)]),
            scoped_markers,
            // As admin of ws1 it manages ws1's confined account, its key
            // and the invites into ws1.
            vec![
                x.secret("key-scoped"),
                x.secret("sa-scoped"),
                x.secret("sa-confined"),
                x.secret("key-confined"),
                format!("{t}-ws-invitee@"),
            ],
        ),
        attacker(
            format!("{n} ORG_USER PAT"),
            Org::pat(&x.user),
            &x.user.id,
            Reach::Home {
                user: x.user.id.clone(),
                home: x.user.home.clone(),
                may_create_pat: true,
            },
            ws(&[
                ("ws1", &x.ws1),
                ("ws2", &x.ws2),
                ("admin.home", &x.admin.home),
            ]),
            off_limits(&["app-two", "res-two", "owner-two"]),
            vec![x.secret("pat-user")],
        ),
        attacker(
            format!("{n} ORG_VIEWER PAT"),
            Org::pat(&x.viewer),
            &x.viewer.id,
            Reach::Home {
                user: x.viewer.id.clone(),
                home: x.viewer.home.clone(),
                may_create_pat: false,
            },
            ws(&[
                ("ws1", &x.ws1),
                ("ws2", &x.ws2),
                ("admin.home", &x.admin.home),
            ]),
            off_limits(&["app-two", "res-two", "owner-two"]),
            vec![x.secret("pat-viewer")],
        ),
        attacker(
            format!("{n} ORG_USER org key"),
            &x.key_user_sa,
            &x.sa_user,
            Reach::Content(x.ws2.clone()),
            ws(&[
                ("ws1", &x.ws1),
                ("ws2", &x.ws2),
                ("admin.home", &x.admin.home),
            ]),
            // Its checks may show grant scopes anywhere (application names);
            // a registered resource's own tags it may not read.
            off_limits(&["owner-one"]),
            vec![x.secret("key-usersa"), x.secret("sa-user")],
        ),
    ]
}

/// The victim's own questions: its org-scoped admin key asks about its
/// users and its ORG_USER service account in ws1 and ws2, with and without
/// tags, and about its registered resources.
fn battery(x: &Org) -> Battery {
    use pb::check_principal::Kind;
    let principals = [
        ("admin", Kind::UserId(x.admin.id.clone())),
        ("user", Kind::UserId(x.user.id.clone())),
        ("viewer", Kind::UserId(x.viewer.id.clone())),
        ("editor", Kind::UserId(x.editor.id.clone())),
        ("sa-user", Kind::ServiceAccountId(x.sa_user.clone())),
    ];
    let workspaces = [
        ("ws1", &x.ws1, x.secret("res-one")),
        ("ws2", &x.ws2, x.secret("res-two")),
    ];
    let mut checks = Vec::new();
    let mut listings = Vec::new();
    for (who, principal) in &principals {
        let principal = Some(pb::CheckPrincipal {
            kind: Some(principal.clone()),
        });
        for (wl, ws, res) in &workspaces {
            listings.push((
                format!("{} {who} permissions in {wl}", x.name),
                pb::ListPrincipalPermissionsRequest {
                    principal: principal.clone(),
                    workspace_id: (*ws).clone(),
                    at_least_revision: 0,
                },
            ));
            let resources = [
                (
                    "untagged",
                    pb::Resource {
                        r#type: "prompts".into(),
                        ..Default::default()
                    },
                ),
                (
                    "tagged",
                    pb::Resource {
                        r#type: "prompts".into(),
                        id: String::new(),
                        tags: vec![
                            tag("Environment", "prod"),
                            tag("Application", &x.secret("app-one")),
                        ],
                    },
                ),
                (
                    "registered",
                    pb::Resource {
                        r#type: "prompts".into(),
                        id: res.clone(),
                        tags: Vec::new(),
                    },
                ),
            ];
            for permission in ["prompts:read", "prompts:update"] {
                for (rl, resource) in &resources {
                    checks.push((
                        format!("{} {who} {permission} in {wl} on {rl}", x.name),
                        pb::CheckRequest {
                            principal: principal.clone(),
                            workspace_id: (*ws).clone(),
                            permission: permission.into(),
                            resource: Some(resource.clone()),
                            at_least_revision: 0,
                        },
                    ));
                }
            }
            checks.push((
                format!("{} {who} members:manage in {wl}", x.name),
                pb::CheckRequest {
                    principal: principal.clone(),
                    workspace_id: (*ws).clone(),
                    permission: "members:manage".into(),
                    resource: Some(pb::Resource {
                        r#type: "members".into(),
                        ..Default::default()
                    }),
                    at_least_revision: 0,
                },
            ));
        }
    }
    // After every method, a few: the admin in ws1 (the first target of every
    // request), with its registered resource (tags are cached too), and the
    // ORG_USER in ws2.
    let quick = checks
        .iter()
        .filter(|(label, _)| {
            let admin_ws1 =
                label.contains(" admin prompts:read in ws1 on ") && !label.ends_with(" on tagged");
            admin_ws1 || label.ends_with(" user prompts:read in ws2 on untagged")
        })
        .cloned()
        .collect();
    Battery {
        key: x.key_admin.secret.clone(),
        checks,
        quick,
        listings,
    }
}

// ---------------------------------------------------------------------------
// The runs.

/// How many attackers run at once (each on a copy of the world): with
/// PostgreSQL most of the time goes to waiting for it.
fn parallelism(b: Backend) -> usize {
    std::env::var("PORTCULLIS_ISOLATION_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(match b {
            Backend::Sqlite => 2,
            Backend::Postgres => 3,
        })
}

/// One attacker against a copy of the world, on a server with cold caches,
/// judged also by the questions of the organization it attacks.
async fn one_attacker(
    world: Arc<Original>,
    schema: Arc<Schema>,
    names: Vec<Named>,
    a: Attacker,
    victim: Victim,
    phase: String,
    poisons: Poisons,
) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    let copy = world.copy().await;
    let copied = started.elapsed();
    let db = Db::open(&copy.url).await;
    let stage = Stage {
        phase,
        names,
        victim: Some(victim),
        poisons,
    };
    let mut arena = Arena::new(&copy.url, &db, &schema, stage, &mut report).await;
    arena.run(std::slice::from_ref(&a)).await;
    let channel = arena.channel();
    if !a.minimal {
        let meta = Meta {
            key: a.key.clone(),
            tenant: None,
            act_as: None,
            label: String::new(),
        };
        let who = call(
            &channel,
            "/portcullis.v1.IdentityService/WhoAmI",
            Vec::new(),
            &meta,
        )
        .await;
        if !matches!(who, Outcome::Ok(_)) {
            arena.note(format!("{}: after its run its key answers {who}", a.label));
        }
    }
    arena.stop().await;
    report.notes.push(format!(
        "{}: {:.1} s (copying the world: {:.1} s)",
        a.label,
        started.elapsed().as_secs_f64(),
        copied.as_secs_f64()
    ));
    db.conn.close().await.ok();
    report
}

/// Runs each attacker on a copy of the world, a few at once. With each
/// attacker come the name of its phase and the id of the organization whose
/// questions judge it (one of `victims`).
async fn attack_each(
    s: &TestServer,
    world: &World,
    attackers: Vec<(Attacker, String, String)>,
    victims: &[&Org],
) -> Report {
    let schema = Arc::new(Schema::served());
    let mut questions = HashMap::new();
    for v in victims {
        let asked = Victim::ask(battery(v), &s.db_url).await;
        let answers: Vec<&String> = asked.before.values().collect();
        assert!(
            answers.iter().any(|a| *a == "Allowed") && answers.iter().any(|a| *a == "Denied"),
            "{}'s questions should get both answers: {answers:?}",
            v.name
        );
        questions.insert(v.id.clone(), asked);
    }
    let original = Arc::new(Original::of(&s.db_url, s.backend).await);
    let poisons: Poisons = Arc::default();
    let mut jobs = tokio::task::JoinSet::new();
    let mut report = Report::default();
    let only = std::env::var("PORTCULLIS_ISOLATION_ATTACKER").ok();
    let mut queue = attackers
        .into_iter()
        .filter(|(a, _, _)| only.as_deref().is_none_or(|o| a.label.contains(o)));
    loop {
        while jobs.len() < parallelism(s.backend) {
            let Some((a, phase, victim)) = queue.next() else {
                break;
            };
            jobs.spawn(one_attacker(
                original.clone(),
                schema.clone(),
                world.names(),
                a,
                questions[&victim].clone(),
                phase,
                poisons.clone(),
            ));
        }
        match jobs.join_next().await {
            Some(done) => report.merge(done.expect("an attacker's run panicked")),
            None => break,
        }
    }
    report
}

fn finish(b: Backend, what: &str, report: &Report, started: Instant) {
    eprintln!(
        "{what} ({b:?}) in {:.1} s; answers per method and phase:\n{}",
        started.elapsed().as_secs_f64(),
        report.summary()
    );
    for n in &report.notes {
        eprintln!("  note: {n}");
    }
    if !report.findings.is_empty() {
        let full = report.describe(400, 400_000);
        eprintln!("{full}");
        panic!("{what} ({b:?}): {}", report.describe(40, 24_000));
    }
}

/// A server for the world: workspace invites on, so the world holds one.
async fn start_world(b: Backend) -> TestServer {
    harness::start_with_settings(
        b,
        Settings {
            workspace_invites: true,
            ..Settings::default()
        },
    )
    .await
}

async fn no_key_reaches_another_organization(b: Backend) {
    let started = Instant::now();
    let s = start_world(b).await;
    let world = build_world(&s).await;
    let db = Db::open(&s.db_url).await;
    let mut attackers = Vec::new();
    for (a, v) in [(&world.p, &world.q), (&world.q, &world.p)] {
        let phase = format!("{} keys against {} and the platform", a.name, v.name);
        for attacker in across(&world, a, v, &db).await {
            attackers.push((attacker, phase.clone(), v.id.clone()));
        }
    }
    db.conn.close().await.ok();
    let report = attack_each(&s, &world, attackers, &[&world.p, &world.q]).await;
    finish(b, "cross-organization attacks", &report, started);
    streams_carried_changes(&report);
}

/// Every server-streaming method gave messages to the attackers that watched
/// their own organization from the beginning: the streams are read long
/// enough, and asked for enough, that one reaching across organizations
/// would have shown what it carried.
fn streams_carried_changes(report: &Report) {
    let narrowed = [
        "PORTCULLIS_ISOLATION_METHOD",
        "PORTCULLIS_ISOLATION_ATTACKER",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok());
    if narrowed {
        return;
    }
    for m in Schema::served()
        .methods
        .iter()
        .filter(|m| m.server_streaming)
    {
        assert!(
            report.streamed(&m.name) > 0,
            "{}: no stream gave a message, so none could show a leak",
            m.name
        );
    }
}

async fn lesser_keys_stay_within_their_power(b: Backend) {
    let started = Instant::now();
    let s = start_world(b).await;
    let world = build_world(&s).await;
    let db = Db::open(&s.db_url).await;
    let mut attackers = Vec::new();
    for (x, other) in [(&world.p, &world.q), (&world.q, &world.p)] {
        let phase = format!("{} lesser keys", x.name);
        for attacker in within(&world, x, other, &db).await {
            attackers.push((attacker, phase.clone(), x.id.clone()));
        }
    }
    db.conn.close().await.ok();
    let report = attack_each(&s, &world, attackers, &[&world.p, &world.q]).await;
    finish(b, "lesser-key attacks", &report, started);
}

both_backends!(
    no_key_reaches_another_organization,
    lesser_keys_stay_within_their_power
);
