//! One AlertRule on one Host, for the controller and `nova apply` alike: its rule file, its
//! routing, and Prometheus's answer read back. The host's Alertmanager configuration is the
//! merge of every AlertRule routing there; each one's part is kept on the host itself (a
//! root-only JSON file per object, [`ROUTING_DIR`]), so that whoever applies one object — the
//! operator or a CLI that knows only its own file — rebuilds the whole without the others'
//! Secrets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::onhost::{self, Error};
use super::routing::{self, Secrets};
use super::validate::Checked;
use super::{observe, rules};
use crate::api::alert::{AlertRuleStatus, Routing};
use crate::conditions::Cond;
use crate::ssh::{Connection, quote};

/// Each AlertRule's routing on the host, with its Secrets resolved (mode 0600).
pub const ROUTING_DIR: &str = "/etc/prometheus/nova/routing";
const TIMEOUT: Duration = Duration::from_secs(60);

fn routing_path(namespace: &str, name: &str) -> String {
    format!("{ROUTING_DIR}/{namespace}--{name}.json")
}

/// What is kept on the host of one object's routing.
#[derive(Serialize, Deserialize)]
struct Part {
    owner: String,
    routing: Routing,
    /// (Secret, key, value).
    secrets: Vec<(String, String, String)>,
}

/// Who an object is, and what it asks of a host.
pub struct Object<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub owner: &'a str,
    pub checked: &'a Checked,
    /// Its routing when valid, with the values of the Secrets it names.
    pub routing: Option<(&'a Routing, &'a Secrets)>,
}

/// Applies `o` on the host behind `conn` and reads its rules back into `status`; returns when to
/// look again and the Ready/MetricsPresent conditions.
pub async fn apply(
    conn: &Connection,
    o: &Object<'_>,
    status: &mut AlertRuleStatus,
) -> Result<(Duration, Vec<Cond>), Error> {
    let yaml = rules::yaml(o.owner, &o.checked.groups);
    onhost::put_rules(conn, &onhost::rules_path(o.namespace, o.name), &yaml).await?;
    route(conn, o.namespace, o.name, o.owner, o.routing).await?;
    Ok(match onhost::answer(conn).await? {
        Ok(a) => observe::fill(o.owner, o.checked, &a, status),
        Err(e) => observe::unreachable(&e),
    })
}

/// Removes everything of object `namespace/name` from the host.
pub async fn remove(conn: &Connection, namespace: &str, name: &str) -> Result<(), Error> {
    onhost::remove_rules(conn, &onhost::rules_path(namespace, name)).await?;
    route(conn, namespace, name, "", None).await
}

/// Writes (or, with `None`, removes) this object's part and installs the merged configuration;
/// the part goes back as it was when Alertmanager refuses the merge.
async fn route(
    conn: &Connection,
    namespace: &str,
    name: &str,
    owner: &str,
    routing: Option<(&Routing, &Secrets)>,
) -> Result<(), Error> {
    let path = routing_path(namespace, name);
    let before = read(conn, &format!("cat {} 2>/dev/null || true", quote(&path))).await?;
    let after = part_json(owner, routing);
    if before.trim() == after.trim() {
        return Ok(());
    }
    write(conn, &path, &after).await?;
    let result = install_merged(conn).await;
    if result.is_err() {
        write(conn, &path, &before).await?;
    }
    result
}

/// [`route`] for many objects at once: one read of their parts, the changed ones written, and
/// one merge installed; when Alertmanager refuses the merge, every part goes back as it was.
pub(super) async fn route_all(conn: &Connection, objects: &[Object<'_>]) -> Result<(), Error> {
    let paths: Vec<String> = objects.iter().map(|o| routing_path(o.namespace, o.name)).collect();
    // One line per path: the part is one line of JSON; a missing part is an empty line.
    let listed = paths.iter().map(|p| quote(p)).collect::<Vec<_>>().join(" ");
    let all = read(conn, &format!("for f in {listed}; do cat \"$f\" 2>/dev/null | tr -d '\\n'; echo; done"))
        .await?;
    let before: Vec<&str> = all.split('\n').map(str::trim).collect();
    let mut changed = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let was = before.get(i).copied().unwrap_or_default();
        let after = part_json(o.owner, o.routing);
        if was != after.trim() {
            changed.push((i, was.to_owned(), after));
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    for (i, _, after) in &changed {
        write(conn, &paths[*i], after).await?;
    }
    let result = install_merged(conn).await;
    if result.is_err() {
        for (i, was, _) in &changed {
            write(conn, &paths[*i], was).await?;
        }
    }
    result
}

/// What is kept on the host of one object's routing (empty: none).
fn part_json(owner: &str, routing: Option<(&Routing, &Secrets)>) -> String {
    routing
        .map(|(r, s)| Part {
            owner: owner.to_owned(),
            routing: r.clone(),
            secrets: s.iter().map(|((n, k), v)| (n.clone(), k.clone(), v.clone())).collect(),
        })
        .map(|p| serde_json::to_string(&p).unwrap_or_default())
        .unwrap_or_default()
}

async fn read(conn: &Connection, command: &str) -> Result<String, Error> {
    let mut out = Vec::new();
    conn.run_with_output(command, &mut out, TIMEOUT).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Writes `content` at `path` (root only), or removes the file when `content` is empty.
async fn write(conn: &Connection, path: &str, content: &str) -> Result<(), Error> {
    if content.trim().is_empty() {
        conn.run(&format!("rm -f {}", quote(path)), TIMEOUT).await?;
    } else {
        conn.upload(path, content.as_bytes(), 0o600, None, TIMEOUT).await?;
    }
    Ok(())
}

/// The merge of every part on the host, installed in Alertmanager.
async fn install_merged(conn: &Connection) -> Result<(), Error> {
    let all = read(
        conn,
        &format!("for f in {ROUTING_DIR}/*.json; do [ -f \"$f\" ] && {{ cat \"$f\"; echo; }}; done; true"),
    )
    .await?;
    let mut objects = Vec::new();
    let mut values = Vec::new();
    for line in all.lines().filter(|l| !l.trim().is_empty()) {
        // A part Nova cannot read is left out of the merge rather than blocking every other.
        let Ok(p) = serde_json::from_str::<Part>(line) else { continue };
        let secrets: Secrets =
            p.secrets.iter().map(|(n, k, v)| ((n.clone(), k.clone()), v.clone())).collect();
        values.extend(p.secrets.into_iter().map(|(_, _, v)| v));
        objects.push((p.owner, p.routing, secrets));
    }
    objects.sort_by(|a, b| a.0.cmp(&b.0));
    let merged = routing::merged(&objects).map_err(|output| Error::Refused {
        tool: "nova",
        what: "the merged Alertmanager configuration".into(),
        output,
    })?;
    let yaml = format!(
        "# Managed by Nova: the routing of every AlertRule that targets this Host.\n{}",
        serde_yaml::to_string(&merged).unwrap_or_default()
    );
    onhost::put_alertmanager(conn, &yaml, &values).await?;
    Ok(())
}
