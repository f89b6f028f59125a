//! The state database on both backends: SQLite (a file) and a real PostgreSQL server.

use anyhow::Result;
use nova::state::State;
use test_cluster::postgres::Postgres;

async fn exercise(state: &State) -> Result<()> {
    assert!(
        state.record_release("Platform", "prod", "shop", "aaa111", "shop:1").await?,
        "first apply is new"
    );
    assert!(!state.record_release("Platform", "prod", "shop", "aaa111", "shop:1").await?, "re-apply is not");
    assert!(state.record_release("Platform", "prod", "shop", "bbb222", "shop:2").await?);
    state.record_release("Platform", "prod", "other", "ccc333", "other:1").await?;

    let releases = state.releases("Platform", "prod", "shop").await?;
    let revisions: Vec<&str> = releases.iter().map(|r| r.revision.as_str()).collect();
    assert_eq!(revisions, ["aaa111", "bbb222"]);
    assert_eq!(releases[1].image, "shop:2");
    assert!(releases[0].last_applied_at >= releases[0].first_applied_at);

    state.audit("Platform", "prod", "shop", "apply", "revision aaa111").await?;
    state.audit("Platform", "prod", "shop", "apply", "revision bbb222").await?;
    let log = state.audit_log("Platform", "prod", "shop").await?;
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].detail, "revision bbb222");
    assert!(state.audit_log("Platform", "prod", "nobody").await?.is_empty());

    // Objects applied without a cluster: saved, replaced on the next apply, listed in order.
    state.save_local("Platform", "default", "web", "{\"v\":1}", "{}").await?;
    state.save_local("Host", "", "box", "{}", "{\"facts\":{}}").await?;
    state.save_local("Platform", "default", "web", "{\"v\":2}", "{\"phase\":\"Healthy\"}").await?;
    let web = state.local("Platform", "default", "web").await?.expect("saved");
    assert_eq!((web.spec.as_str(), web.status.as_str()), ("{\"v\":2}", "{\"phase\":\"Healthy\"}"));
    let all: Vec<String> =
        state.locals().await?.into_iter().map(|o| format!("{}/{}", o.kind, o.name)).collect();
    assert_eq!(all, ["Host/box", "Platform/web"]);
    assert!(state.local("Platform", "default", "nobody").await?.is_none());

    // The backup catalog's index: upserted, a drill's verification recorded, deletions kept.
    let row = |id: &str, verified: Option<&str>| nova::state::CatalogRow {
        id: id.into(),
        taken_at: "2026-11-29T03:00:00Z".into(),
        size_bytes: 42,
        sha256: "ab".repeat(32),
        hmac: None,
        location: "s3://b/p".into(),
        verified_at: verified.map(str::to_owned),
        deleted_at: None,
    };
    state.index_backups("prod", "db", &[row("a", None), row("b", None)]).await?;
    state.index_backups("prod", "db", &[row("b", Some("2026-11-29T03:05:00Z"))]).await?;
    let index = state.backup_index("prod", "db").await?;
    assert_eq!(index.len(), 2);
    assert!(index[0].deleted_at.is_some() && index[1].deleted_at.is_none(), "{index:?}");
    assert_eq!(index[1].verified_at.as_deref(), Some("2026-11-29T03:05:00Z"));
    Ok(())
}

#[tokio::test]
async fn sqlite_file_keeps_history_across_connections() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db").display().to_string();
    exercise(&State::connect(&path).await?).await?;
    // A second connection (an operator restart) sees the same history; migrations are not rerun.
    let again = State::connect(&path).await?;
    assert_eq!(again.releases("Platform", "prod", "shop").await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn postgres_server_holds_the_same_state() -> Result<()> {
    let pg = tokio::task::spawn_blocking(Postgres::start).await??;
    exercise(&State::connect(pg.url()).await?).await?;
    let again = State::connect(pg.url()).await?;
    assert_eq!(again.releases("Platform", "prod", "shop").await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn connection_errors_do_not_leak_the_password() -> Result<()> {
    let err = State::connect("postgres://nova:topsecret@127.0.0.1:1/nova").await.unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("topsecret"), "{text}");
    assert!(text.contains("nova:***@127.0.0.1:1"), "{text}");
    Ok(())
}
