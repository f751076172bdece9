//! Organization defaults for workspace settings: inheritance, overrides,
//! clearing, the source of each effective value, who reads and writes the
//! defaults, bounds and the audit log. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Backend, TestServer, account_key, as_user, assert_code, req, start};
use portcullis::{
    proto::v1::{self as pb, SettingSource},
    store::migration::Migrator,
};
use sea_orm::ConnectionTrait;
use sea_orm_migration::MigratorTrait;
use tonic::{Code, Response, Status};

fn defaults(
    days: Option<u32>,
    limit: Option<u64>,
    clear: &[pb::Setting],
) -> pb::UpdateOrganizationSettingsRequest {
    pb::UpdateOrganizationSettingsRequest {
        organization_id: String::new(),
        data_retention_days: days,
        monthly_trace_limit: limit,
        clear: clear.iter().map(|c| *c as i32).collect(),
    }
}

fn own(
    ws: &str,
    days: Option<u32>,
    limit: Option<u64>,
    clear: &[pb::Setting],
) -> pb::UpdateSettingsRequest {
    pb::UpdateSettingsRequest {
        workspace_id: ws.into(),
        data_retention_days: days,
        monthly_trace_limit: limit,
        clear: clear.iter().map(|c| *c as i32).collect(),
    }
}

async fn set_defaults(
    s: &TestServer,
    key: &str,
    update: pb::UpdateOrganizationSettingsRequest,
) -> Result<Response<pb::UpdateOrganizationSettingsResponse>, Status> {
    s.identity()
        .update_organization_settings(req(update, key))
        .await
}

async fn read_defaults(
    s: &TestServer,
    key: &str,
    org: &str,
) -> Result<Response<pb::GetOrganizationSettingsResponse>, Status> {
    s.identity()
        .get_organization_settings(req(
            pb::GetOrganizationSettingsRequest {
                organization_id: org.into(),
            },
            key,
        ))
        .await
}

async fn set_own(s: &TestServer, update: pb::UpdateSettingsRequest) -> pb::WorkspaceSettings {
    s.workspaces()
        .update_settings(req(update, s.key()))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap()
}

async fn effective(s: &TestServer, key: &str, ws: &str) -> pb::WorkspaceSettings {
    s.workspaces()
        .get_settings(req(
            pb::GetSettingsRequest {
                workspace_id: ws.into(),
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap()
}

/// The effective values and their sources, in one comparable tuple.
fn seen(s: &pb::WorkspaceSettings) -> (u32, SettingSource, u64, SettingSource) {
    (
        s.data_retention_days,
        s.data_retention_days_source(),
        s.monthly_trace_limit,
        s.monthly_trace_limit_source(),
    )
}

async fn workspaces_inherit_the_organization_default_until_they_set_their_own(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("inherits").await;
    assert_eq!(
        seen(&effective(&s, s.key(), &ws).await),
        (0, SettingSource::Default, 0, SettingSource::Default)
    );
    let r = set_defaults(&s, s.key(), defaults(Some(90), Some(5000), &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(r.revision > 0);
    let d = r.settings.unwrap();
    assert_eq!(
        (d.data_retention_days, d.monthly_trace_limit),
        (Some(90), Some(5000))
    );
    assert_eq!(
        seen(&effective(&s, s.key(), &ws).await),
        (
            90,
            SettingSource::Organization,
            5000,
            SettingSource::Organization
        )
    );
    let after = set_own(&s, own(&ws, Some(30), None, &[])).await;
    assert_eq!(
        seen(&after),
        (
            30,
            SettingSource::Workspace,
            5000,
            SettingSource::Organization
        )
    );
    assert_eq!(seen(&effective(&s, s.key(), &ws).await), seen(&after));
}

async fn a_changed_default_reaches_inheriting_workspaces_at_once(b: Backend) {
    let s = start(b).await;
    let inheriting = s.workspace("inheriting").await;
    let overriding = s.workspace("overriding").await;
    set_defaults(&s, s.key(), defaults(Some(60), Some(100), &[]))
        .await
        .unwrap();
    set_own(&s, own(&overriding, Some(7), Some(0), &[])).await;
    // Read once so that anything a read could keep is warm, then change.
    effective(&s, s.key(), &inheriting).await;
    set_defaults(&s, s.key(), defaults(Some(365), Some(250), &[]))
        .await
        .unwrap();
    assert_eq!(
        seen(&effective(&s, s.key(), &inheriting).await),
        (
            365,
            SettingSource::Organization,
            250,
            SettingSource::Organization
        )
    );
    // A workspace's own "unlimited" (0) overrides the organization's limit.
    assert_eq!(
        seen(&effective(&s, s.key(), &overriding).await),
        (7, SettingSource::Workspace, 0, SettingSource::Workspace)
    );
}

async fn a_workspace_clears_its_value_to_inherit_again(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("clears").await;
    set_defaults(&s, s.key(), defaults(Some(45), Some(800), &[]))
        .await
        .unwrap();
    set_own(&s, own(&ws, Some(10), Some(20), &[])).await;
    let cleared = set_own(&s, own(&ws, None, None, &[pb::Setting::MonthlyTraceLimit])).await;
    assert_eq!(
        seen(&cleared),
        (
            10,
            SettingSource::Workspace,
            800,
            SettingSource::Organization
        )
    );
    // A retention of 0 clears too (its meaning before defaults existed).
    let cleared = set_own(&s, own(&ws, Some(0), None, &[])).await;
    assert_eq!(
        seen(&cleared),
        (
            45,
            SettingSource::Organization,
            800,
            SettingSource::Organization
        )
    );
    // Cleared defaults leave the built-in ones.
    let d = set_defaults(
        &s,
        s.key(),
        defaults(
            None,
            None,
            &[
                pb::Setting::DataRetentionDays,
                pb::Setting::MonthlyTraceLimit,
            ],
        ),
    )
    .await
    .unwrap()
    .into_inner()
    .settings
    .unwrap();
    assert_eq!((d.data_retention_days, d.monthly_trace_limit), (None, None));
    assert_eq!(
        seen(&effective(&s, s.key(), &ws).await),
        (0, SettingSource::Default, 0, SettingSource::Default)
    );
}

async fn organization_defaults_are_read_by_every_member_and_written_by_admins_only(b: Backend) {
    let s = start(b).await;
    set_defaults(&s, s.key(), defaults(Some(30), Some(1000), &[]))
        .await
        .unwrap();
    for role in [pb::OrgRole::OrgViewer, pb::OrgRole::OrgUser] {
        let name = format!("{role:?}").to_lowercase();
        let m = s.member(&name, role).await;
        let read = s
            .identity()
            .get_organization_settings(as_user(
                &s,
                pb::GetOrganizationSettingsRequest::default(),
                &m.user_id,
            ))
            .await
            .unwrap()
            .into_inner()
            .settings
            .unwrap();
        assert_eq!(
            (read.data_retention_days, read.monthly_trace_limit),
            (Some(30), Some(1000))
        );
        for (update, needed) in [
            (defaults(Some(7), None, &[]), "data_retention:update"),
            (defaults(None, Some(7), &[]), "usage_limits:update"),
            (
                defaults(None, None, &[pb::Setting::DataRetentionDays]),
                "data_retention:update",
            ),
        ] {
            assert_code(
                s.identity()
                    .update_organization_settings(as_user(&s, update, &m.user_id))
                    .await,
                Code::PermissionDenied,
                needed,
            );
        }
    }
    let (_, user_key) = account_key(&s, "reporter", pb::OrgRole::OrgUser, &[]).await;
    assert_code(
        set_defaults(&s, &user_key, defaults(Some(7), Some(7), &[])).await,
        Code::PermissionDenied,
        "update",
    );
    let admin_pat = s.pat(&s.boot.admin_user_id).await;
    set_defaults(&s, &admin_pat, defaults(Some(14), None, &[]))
        .await
        .unwrap();
    let read = read_defaults(&s, &user_key, "")
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(
        (read.data_retention_days, read.monthly_trace_limit),
        (Some(14), Some(1000))
    );
}

async fn workspace_scoped_admin_key_reads_but_cannot_change_organization_defaults(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("scoped").await;
    set_defaults(&s, s.key(), defaults(Some(21), None, &[]))
        .await
        .unwrap();
    let (_, key) = account_key(&s, "scoped-admin", pb::OrgRole::OrgAdmin, &[&ws]).await;
    for update in [
        defaults(Some(1), None, &[]),
        defaults(None, Some(1), &[]),
        defaults(None, None, &[pb::Setting::DataRetentionDays]),
        defaults(None, None, &[]),
    ] {
        assert_code(
            set_defaults(&s, &key, update).await,
            Code::PermissionDenied,
            "limited to workspaces",
        );
    }
    let read = read_defaults(&s, &key, "")
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(read.data_retention_days, Some(21));
    // Its own workspace it still manages, and it sees the inherited default.
    assert_eq!(
        seen(&effective(&s, &key, &ws).await),
        (21, SettingSource::Organization, 0, SettingSource::Default)
    );
    s.workspaces()
        .update_settings(req(own(&ws, None, Some(3), &[]), &key))
        .await
        .unwrap();
    let unchanged = read_defaults(&s, s.key(), "")
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(
        (unchanged.data_retention_days, unchanged.monthly_trace_limit),
        (Some(21), None)
    );
}

async fn another_organizations_settings_are_answered_as_unknown(b: Backend) {
    let s = start(b).await;
    let globex = s.globex().await;
    let zed = s.pat_in(&globex.id, &globex.admin).await;
    set_defaults(&s, &zed, defaults(Some(99), Some(99), &[]))
        .await
        .unwrap();
    let unknown = "0191c1d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d".to_owned();
    let admin = s.pat(&s.boot.admin_user_id).await;
    let mut answers = Vec::new();
    for org in [&globex.id, &unknown] {
        let read = read_defaults(&s, &admin, org).await.unwrap_err();
        let mut update = defaults(Some(1), Some(1), &[]);
        update.organization_id = org.clone();
        let written = set_defaults(&s, &admin, update).await.unwrap_err();
        answers.push((
            read.code(),
            read.message().replace(org.as_str(), "<id>"),
            written.code(),
            written.message().replace(org.as_str(), "<id>"),
        ));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, Code::PermissionDenied);
    let kept = read_defaults(&s, &zed, "")
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(
        (kept.data_retention_days, kept.monthly_trace_limit),
        (Some(99), Some(99))
    );
    // Their workspace's settings are as unreachable as an unknown one's.
    let mut codes = Vec::new();
    for ws in [&globex.home, &unknown] {
        let got = s
            .workspaces()
            .get_settings(req(
                pb::GetSettingsRequest {
                    workspace_id: ws.clone(),
                },
                &admin,
            ))
            .await
            .unwrap_err();
        codes.push((got.code(), got.message().replace(ws.as_str(), "<id>")));
    }
    assert_eq!(codes[0], codes[1]);
    // And Globex's default is not the bootstrap organization's.
    let home = s.workspace("home-of-p").await;
    assert_eq!(
        seen(&effective(&s, s.key(), &home).await),
        (0, SettingSource::Default, 0, SettingSource::Default)
    );
}

/// An update's retention, limit and clear list, and the rule its refusal names.
type Refused = (Option<u32>, Option<u64>, Vec<i32>, &'static str);

async fn settings_values_are_bounded_and_rejections_name_the_field(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("bounded").await;
    let cases: [Refused; 6] = [
        (
            Some(3651),
            None,
            vec![],
            "data_retention_days: must be at most 3650",
        ),
        (
            None,
            Some(u64::MAX),
            vec![],
            "monthly_trace_limit: must be at most",
        ),
        (
            Some(5),
            None,
            vec![pb::Setting::DataRetentionDays as i32],
            "clear: `data_retention_days` is both given and cleared",
        ),
        (None, None, vec![9], "clear: unknown setting 9"),
        (None, None, vec![0], "clear: unknown setting 0"),
        (
            None,
            None,
            vec![
                pb::Setting::MonthlyTraceLimit as i32,
                pb::Setting::MonthlyTraceLimit as i32,
            ],
            "clear: `monthly_trace_limit` is listed more than once",
        ),
    ];
    for (days, limit, clear, rule) in cases {
        let org = pb::UpdateOrganizationSettingsRequest {
            organization_id: String::new(),
            data_retention_days: days,
            monthly_trace_limit: limit,
            clear: clear.clone(),
        };
        assert_code(
            set_defaults(&s, s.key(), org).await,
            Code::InvalidArgument,
            rule,
        );
        let workspace = pb::UpdateSettingsRequest {
            workspace_id: ws.clone(),
            data_retention_days: days,
            monthly_trace_limit: limit,
            clear,
        };
        assert_code(
            s.workspaces()
                .update_settings(req(workspace, s.key()))
                .await,
            Code::InvalidArgument,
            rule,
        );
    }
    // The bounds themselves are accepted, and nothing refused was written.
    let d = set_defaults(
        &s,
        s.key(),
        defaults(Some(3650), Some(i64::MAX as u64), &[]),
    )
    .await
    .unwrap()
    .into_inner()
    .settings
    .unwrap();
    assert_eq!(
        (d.data_retention_days, d.monthly_trace_limit),
        (Some(3650), Some(i64::MAX as u64))
    );
    assert_eq!(
        seen(&effective(&s, s.key(), &ws).await),
        (
            3650,
            SettingSource::Organization,
            i64::MAX as u64,
            SettingSource::Organization
        )
    );
}

async fn organization_settings_changes_are_audited(b: Backend) {
    let s = start(b).await;
    set_defaults(&s, s.key(), defaults(Some(30), None, &[]))
        .await
        .unwrap();
    let revision = set_defaults(
        &s,
        s.key(),
        defaults(None, Some(500), &[pb::Setting::DataRetentionDays]),
    )
    .await
    .unwrap()
    .into_inner()
    .revision;
    let events = s.audit_events("organization.update_settings").await;
    assert_eq!(events.len(), 2);
    let last = events.iter().find(|e| e.revision == revision).unwrap();
    assert_eq!(last.target_id, s.boot.organization_id);
    let details: serde_json::Value = serde_json::from_str(&last.details_json).unwrap();
    assert_eq!(details["before"]["data_retention_days"], 30);
    assert!(details["before"]["monthly_trace_limit"].is_null());
    assert!(details["after"]["data_retention_days"].is_null());
    assert_eq!(details["after"]["monthly_trace_limit"], 500);
}

async fn settings_written_before_organization_defaults_keep_their_meaning(b: Backend) {
    let s = start(b).await;
    let ws = s.workspace("legacy").await;
    let db = s.store.db();
    // Back to the schema where 0 meant "organization default" (retention)
    // and "unlimited" (limit), both always written.
    // Every migration from m0006 on is taken down, and then up again.
    let later = Migrator::migrations()
        .iter()
        .rev()
        .take_while(|m| m.name() != "m0006_organization_settings")
        .count();
    let steps = u32::try_from(later + 1).unwrap();
    Migrator::down(db, Some(steps)).await.unwrap();
    db.execute_unprepared(&format!(
        "INSERT INTO workspace_settings (workspace_id, data_retention_days, monthly_trace_limit, updated_at) \
         VALUES ('{ws}', 30, 0, 1)"
    ))
    .await
    .unwrap();
    Migrator::up(db, None).await.unwrap();
    assert_eq!(
        seen(&effective(&s, s.key(), &ws).await),
        (30, SettingSource::Workspace, 0, SettingSource::Default)
    );
    // The limit never chosen for the workspace inherits the new default.
    set_defaults(&s, s.key(), defaults(Some(90), Some(700), &[]))
        .await
        .unwrap();
    assert_eq!(
        seen(&effective(&s, s.key(), &ws).await),
        (
            30,
            SettingSource::Workspace,
            700,
            SettingSource::Organization
        )
    );
}

both_backends!(
    settings_written_before_organization_defaults_keep_their_meaning,
    workspaces_inherit_the_organization_default_until_they_set_their_own,
    a_changed_default_reaches_inheriting_workspaces_at_once,
    a_workspace_clears_its_value_to_inherit_again,
    organization_defaults_are_read_by_every_member_and_written_by_admins_only,
    workspace_scoped_admin_key_reads_but_cannot_change_organization_defaults,
    another_organizations_settings_are_answered_as_unknown,
    settings_values_are_bounded_and_rejections_name_the_field,
    organization_settings_changes_are_audited,
);
