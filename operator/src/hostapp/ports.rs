//! Each application's colour ports on a host. Allocated on the host itself on first use, under
//! a lock (`flock`), as the lowest pair in 5001–5998 that no other Nova application holds and
//! nothing listens on; recorded there (`/var/lib/nova/ports/<app id>`), so they stay stable
//! across operator restarts, and freed when the application is removed. The pair is reported in
//! the rollout's status (`status.hostPorts`).

use futures::future::join_all;

use super::desired::{App, PORTS};
use super::engine::{Error, HostConn};
use crate::api::bluegreen::HostPorts;
use crate::ssh::quote;

/// Where the pairs are recorded on a host, one file per application holding its first port.
pub const DIR: &str = "/var/lib/nova/ports";
/// The last first port of a pair.
const LAST: u16 = 5997;

/// The application's record file on a host.
pub fn record(id: &str) -> String {
    format!("{DIR}/{id}")
}

/// Prints the application's first port, allocating the pair when it has none. An application
/// deployed before ports were allocated (its state directory exists, no record) keeps 5001 while
/// no other application records it: it runs there.
pub fn script(id: &str) -> String {
    format!(
        r#"set -e; mkdir -p {dir}; exec 9>{dir}/.lock; flock 9
f={f}
if [ -s "$f" ]; then cat "$f"; exit 0; fi
taken=" $( (cat {dir}/* 2>/dev/null | tr '\n' ' ') || true) "
listening=" $( (command -v ss >/dev/null && ss -Hltn | awk '{{n=split($4,a,":"); print a[n]}}' | tr '\n' ' ') || true) "
b=
if [ -d {state} ]; then case "$taken" in *" {first} "*) ;; *) b={first};; esac; fi
if [ -z "$b" ]; then
  p={first}
  while [ "$p" -le {last} ]; do
    g=$((p + 1))
    case "$taken$listening" in *" $p "*|*" $g "*) ;; *) b=$p; break;; esac
    p=$((p + 2))
  done
fi
[ -n "$b" ] || {{ echo "no free port pair between {first} and {end} on this host" >&2; exit 1; }}
echo "$b" > "$f.tmp" && mv "$f.tmp" "$f" && echo "$b""#,
        dir = quote(DIR),
        f = quote(&record(id)),
        state = quote(&format!("/var/lib/nova/state/{id}")),
        first = PORTS[0],
        last = LAST,
        end = LAST + 1,
    )
}

/// The pair from the script's output.
pub fn parse(out: &str) -> Option<[u16; 2]> {
    let first: u16 = out.trim().parse().ok()?;
    (PORTS[0]..=LAST).contains(&first).then(|| [first, first + 1])
}

/// The application as each host runs it: with the pair allocated there.
pub async fn resolve(hosts: &[HostConn], app: &App) -> Result<Vec<App>, Error> {
    let script = script(&app.id);
    let outs = join_all(hosts.iter().map(|h| h.conn.run(&script, std::time::Duration::from_secs(60)))).await;
    hosts
        .iter()
        .zip(outs)
        .map(|(h, out)| {
            let out = out.map_err(|e| match e {
                crate::ssh::Error::Failed { output, .. } => {
                    Error::Step { host: h.name.clone(), what: "allocating the colour ports".into(), output }
                }
                other => Error::Ssh(other),
            })?;
            let ports = parse(&out).ok_or_else(|| Error::Step {
                host: h.name.clone(),
                what: "allocating the colour ports".into(),
                output: format!("unexpected answer {:?}", out.trim()),
            })?;
            Ok(App { ports, ..app.clone() })
        })
        .collect()
}

/// What the status says of them.
pub fn status(hosts: &[HostConn], apps: &[App]) -> Vec<HostPorts> {
    hosts
        .iter()
        .zip(apps)
        .map(|(h, a)| HostPorts { host: h.name.clone(), blue: a.ports[0].into(), green: a.ports[1].into() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_to_a_pair_in_range() {
        assert_eq!(parse("5003\n"), Some([5003, 5004]));
        assert_eq!(parse("22"), None);
        assert_eq!(parse("6000"), None);
        assert_eq!(parse("no"), None);
    }

    /// The allocation as a shell runs it, against records and listeners made up here.
    #[test]
    fn the_script_takes_the_lowest_free_pair_and_keeps_it() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path().display().to_string();
        let run = |id: &str| {
            let s = script(id).replace(DIR, &d).replace("command -v ss", "false");
            let out = std::process::Command::new("bash").arg("-c").arg(&s).output().expect("bash");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        std::fs::write(dir.path().join("other"), "5001\n").expect("record");
        assert_eq!(run("default-shop"), "5003", "5001 is another application's");
        assert_eq!(run("default-blog"), "5005");
        assert_eq!(run("default-shop"), "5003", "kept");
        std::fs::remove_file(dir.path().join("other")).expect("free");
        assert_eq!(run("default-wiki"), "5001", "a freed pair is reused");
    }
}
