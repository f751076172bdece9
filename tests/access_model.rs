//! A property test of grants and teams: for random organizations, teams,
//! grants and scopes (several seeds, on both backends), what `ListAccess`,
//! `ListWorkspaces` and `Check` report agrees with a plain in-memory model of
//! the same rules, after building and again after random removals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::{BTreeSet, HashMap};

use harness::{Backend, TestServer, as_user, req, start};
use portcullis::{proto::v1 as pb, seed::Rng};

/// (subject, role, scope) as strings, for comparing sets.
type GrantKey = (String, String, String);

#[derive(Default)]
struct Model {
    /// user → teams.
    teams_of: HashMap<String, BTreeSet<String>>,
    /// workspace → grant id → key.
    grants: HashMap<String, HashMap<String, GrantKey>>,
    /// user → default workspace.
    homes: HashMap<String, String>,
}

impl Model {
    fn reaching(&self, user: &str, ws: &str) -> BTreeSet<GrantKey> {
        let teams = self.teams_of.get(user).cloned().unwrap_or_default();
        self.grants
            .get(ws)
            .map(|g| {
                g.values()
                    .filter(|(subject, _, _)| {
                        *subject == format!("user:{user}")
                            || teams.iter().any(|t| *subject == format!("team:{t}"))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn visible(&self, user: &str) -> BTreeSet<String> {
        self.grants
            .keys()
            .filter(|ws| !self.reaching(user, ws).is_empty())
            .cloned()
            .collect()
    }
}

fn key_of(g: &pb::Grant) -> GrantKey {
    let subject = match g.subject.as_ref().unwrap().kind.as_ref().unwrap() {
        pb::subject::Kind::UserId(id) => format!("user:{id}"),
        pb::subject::Kind::TeamId(id) => format!("team:{id}"),
        pb::subject::Kind::ServiceAccountId(id) => format!("service_account:{id}"),
    };
    (subject, g.role.clone(), format!("{:?}", g.scope))
}

async fn listed(s: &TestServer, ws: &str, filter: Option<&str>) -> BTreeSet<GrantKey> {
    let mut out = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = s
            .workspaces()
            .list_access(req(
                pb::ListAccessRequest {
                    workspace_id: ws.into(),
                    subject: filter.map(|u| pb::Subject {
                        kind: Some(pb::subject::Kind::UserId(u.into())),
                    }),
                    page_size: 3,
                    page_token: token.clone(),
                },
                s.key(),
            ))
            .await
            .unwrap()
            .into_inner();
        out.extend(page.grants.iter().map(key_of));
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

async fn compare(
    s: &TestServer,
    model: &Model,
    users: &[String],
    workspaces: &[String],
    seed: u64,
    phase: &str,
) {
    for ws in workspaces {
        let all: BTreeSet<GrantKey> = model.grants[ws].values().cloned().collect();
        let bootstrap_admin = listed(s, ws, None).await;
        let server: BTreeSet<GrantKey> = bootstrap_admin
            .into_iter()
            .filter(|(subject, _, _)| !subject.starts_with("service_account:"))
            .collect();
        assert_eq!(
            server, all,
            "seed {seed}, {phase}: grants of workspace {ws}"
        );
        for u in users {
            assert_eq!(
                listed(s, ws, Some(u)).await,
                model.reaching(u, ws),
                "seed {seed}, {phase}: grants reaching {u} in {ws}"
            );
            let expect = !model
                .reaching(u, ws)
                .iter()
                .all(|(_, _, scope)| scope != "None");
            assert_eq!(
                s.allowed(u, ws, "datasets:read", &[]).await,
                expect,
                "seed {seed}, {phase}: check of {u} in {ws}"
            );
        }
    }
    for u in users {
        let visible: BTreeSet<String> = s
            .workspaces()
            .list_workspaces(as_user(s, pb::ListWorkspacesRequest::default(), u))
            .await
            .unwrap()
            .into_inner()
            .workspaces
            .into_iter()
            .map(|w| w.id)
            .filter(|id| *id != model.homes[u])
            .collect();
        assert_eq!(
            visible,
            model.visible(u),
            "seed {seed}, {phase}: workspaces listed for {u}"
        );
    }
}

async fn grants_and_teams_agree_with_the_model(b: Backend) {
    for seed in [3u64, 17, 2024] {
        let s = start(b).await;
        let mut rng = Rng::new(seed);
        let mut model = Model::default();
        let mut users = Vec::new();
        for i in 0..5 {
            let m = s
                .member(&format!("u{seed}x{i}"), pb::OrgRole::OrgUser)
                .await;
            model.homes.insert(m.user_id.clone(), m.home);
            users.push(m.user_id);
        }
        let mut teams = Vec::new();
        for i in 0..3 {
            let members: Vec<&str> = users
                .iter()
                .filter(|_| rng.below(2) == 0)
                .map(String::as_str)
                .collect();
            let t = s.team(&format!("team{i}"), &members).await;
            for m in &members {
                model
                    .teams_of
                    .entry((*m).to_owned())
                    .or_default()
                    .insert(t.clone());
            }
            teams.push(t);
        }
        let mut workspaces = Vec::new();
        for i in 0..2 {
            let ws = s.workspace(&format!("ws{i}")).await;
            for app in ["chat", "search"] {
                s.application(&ws, app).await;
            }
            model.grants.insert(ws.clone(), HashMap::new());
            workspaces.push(ws);
        }
        let roles = ["WORKSPACE_ADMIN", "WORKSPACE_EDITOR", "WORKSPACE_VIEWER"];
        for _ in 0..16 {
            let ws = workspaces[rng.below(workspaces.len())].clone();
            let subject = if rng.below(3) == 0 {
                pb::subject::Kind::TeamId(teams[rng.below(teams.len())].clone())
            } else {
                pb::subject::Kind::UserId(users[rng.below(users.len())].clone())
            };
            let scope = match rng.below(4) {
                0 => Some(pb::Scope {
                    conditions: vec![],
                    application: ["chat", "search"][rng.below(2)].into(),
                }),
                1 => Some(pb::Scope {
                    conditions: vec![pb::TagCondition {
                        key: "Environment".into(),
                        values: vec!["prod".into()],
                    }],
                    application: String::new(),
                }),
                _ => None,
            };
            let r = s
                .workspaces()
                .grant_access(req(
                    pb::GrantAccessRequest {
                        workspace_id: ws.clone(),
                        subject: Some(pb::Subject {
                            kind: Some(subject),
                        }),
                        role: roles[rng.below(roles.len())].into(),
                        scope,
                        expires_at: None,
                    },
                    s.key(),
                ))
                .await;
            match r {
                Ok(resp) => {
                    let g = resp.into_inner().grant.unwrap();
                    model
                        .grants
                        .get_mut(&ws)
                        .unwrap()
                        .insert(g.id.clone(), key_of(&g));
                }
                Err(status) => assert_eq!(
                    status.code(),
                    tonic::Code::AlreadyExists,
                    "seed {seed}: {status:?}"
                ),
            }
        }
        compare(&s, &model, &users, &workspaces, seed, "after granting").await;

        for _ in 0..3 {
            let t = teams[rng.below(teams.len())].clone();
            let u = users[rng.below(users.len())].clone();
            if model.teams_of.get(&u).is_some_and(|ts| ts.contains(&t)) {
                s.identity()
                    .remove_team_member(req(
                        pb::RemoveTeamMemberRequest {
                            organization_id: String::new(),
                            team_id: t.clone(),
                            user_id: u.clone(),
                        },
                        s.key(),
                    ))
                    .await
                    .unwrap();
                model.teams_of.get_mut(&u).unwrap().remove(&t);
            }
        }
        for ws in &workspaces {
            let ids: Vec<String> = model.grants[ws].keys().cloned().collect();
            for id in ids.into_iter().filter(|_| rng.below(3) == 0) {
                s.workspaces()
                    .revoke_access(req(
                        pb::RevokeAccessRequest {
                            workspace_id: ws.clone(),
                            grant_id: id.clone(),
                        },
                        s.key(),
                    ))
                    .await
                    .unwrap();
                model.grants.get_mut(ws).unwrap().remove(&id);
            }
        }
        compare(&s, &model, &users, &workspaces, seed, "after removals").await;
    }
}

both_backends!(grants_and_teams_agree_with_the_model);
