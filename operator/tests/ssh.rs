//! The SSH engine against a real sshd on a test host (systemd + OpenSSH in namespaces).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use nova::ssh::{self, Connection, Error, HostKeyPolicy, Target};
use test_cluster::testhost::TestHost;

fn target(host: &TestHost, policy: HostKeyPolicy) -> Result<Target> {
    Ok(Target {
        address: host.ssh_addr.ip().to_string(),
        port: host.ssh_addr.port(),
        user: "root".into(),
        key: Arc::new(ssh::private_key(&host.client_key, "the test key")?),
        host_key: policy,
        connect_timeout: Duration::from_secs(10),
    })
}

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn pinned_keys_commands_uploads_and_timeouts() -> Result<()> {
    let host = tokio::task::spawn_blocking(|| TestHost::start("engine")).await??;

    // The right pinned key: commands run, output and exit codes come back.
    let c = Connection::open(&target(&host, HostKeyPolicy::Pinned(host.host_key.clone()))?).await?;
    assert_eq!(c.run("hostname", T).await?.trim(), "engine");
    let out = c.exec("echo out; echo err >&2; exit 3", None, T).await?;
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (3, "out", "err"));
    let failed = c.run("ls /nonexistent", T).await.unwrap_err();
    assert!(matches!(failed, Error::Failed { code: 2, .. }), "{failed}");
    assert!(failed.to_string().contains("No such file"), "{failed}");

    // Quoting: a hostile value arrives as one literal argument.
    let hostile = "a'b; touch /tmp/pwned; $(id)";
    assert_eq!(c.run(&format!("printf %s {}", ssh::quote(hostile)), T).await?, hostile);
    assert_eq!(host.ssh("test -e /tmp/pwned && echo yes || echo no")?.trim(), "no");

    // Uploads: atomic, with mode and owner, and idempotent.
    let changed = c.upload("/etc/nova/app.env", b"A=1\n", 0o640, Some("root:root"), T).await?;
    assert!(changed);
    assert_eq!(host.ssh("cat /etc/nova/app.env")?, "A=1\n");
    assert_eq!(host.ssh("stat -c '%a %U' /etc/nova/app.env")?.trim(), "640 root");
    assert!(
        !c.upload("/etc/nova/app.env", b"A=1\n", 0o640, Some("root:root"), T).await?,
        "same content: unchanged"
    );
    assert!(c.upload("/etc/nova/app.env", b"A=2\n", 0o640, Some("root:root"), T).await?);
    assert!(
        c.upload("/etc/nova/app.env", b"A=2\n", 0o600, Some("root:root"), T).await?,
        "a new mode is a change"
    );
    assert_eq!(host.ssh("ls -A /etc/nova")?.trim(), "app.env", "no temporary files left behind");
    let bad = c.upload("/etc/../etc/passwd", b"x", 0o644, None, T).await.unwrap_err();
    assert!(bad.to_string().contains("must not contain `..`"), "{bad}");

    // A command that outlives its timeout is reported as such.
    let slow = c.run("sleep 30", Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(slow, Error::Timeout { .. }), "{slow}");
    c.close().await;

    // AcceptNew records the key the server shows; it is the host's.
    let first = Connection::open(&target(&host, HostKeyPolicy::AcceptNew(None))?).await?;
    assert_eq!(ssh::fingerprint(first.host_key())?, ssh::fingerprint(&host.host_key)?);
    first.close().await;
    Ok(())
}

#[tokio::test]
async fn a_wrong_host_key_is_refused_before_anything_runs() -> Result<()> {
    let (host, other) = tokio::task::spawn_blocking(|| {
        std::thread::scope(|s| {
            let a = s.spawn(|| TestHost::start("real"));
            let b = s.spawn(|| TestHost::start("other"));
            (a.join().expect("thread"), b.join().expect("thread"))
        })
    })
    .await?;
    let (host, other) = (host?, other?);
    // Pinned to another machine's key (a man in the middle would look like this).
    let t = target(&host, HostKeyPolicy::Pinned(other.host_key.clone()))?;
    let err = Connection::open(&t).await.expect_err("refused");
    match &err {
        Error::HostKeyMismatch { expected, presented, .. } => {
            assert_eq!(expected, &ssh::fingerprint(&other.host_key)?);
            assert_eq!(presented, &ssh::fingerprint(&host.host_key)?);
        }
        e => panic!("expected a host key mismatch, got {e}"),
    }
    assert!(!err.transient(), "a mismatch is not retried");
    // A recorded key (AcceptNew after the first time) is enforced the same way.
    let t = target(&host, HostKeyPolicy::AcceptNew(Some(other.host_key.clone())))?;
    assert!(matches!(Connection::open(&t).await, Err(Error::HostKeyMismatch { .. })));
    // Nothing was logged in: sshd's journal shows no accepted session.
    let journal = host.ssh("journalctl -u ssh --no-pager -q | grep -c 'Accepted publickey' || true")?;
    assert_eq!(journal.trim(), "1", "only the check's own login above: {journal}");

    // An unreachable host is transient (retried), with the address in the message.
    let mut t = target(&host, HostKeyPolicy::Pinned(host.host_key.clone()))?;
    t.port = 1;
    let err = ssh::open_with_retry(&t, 2).await.expect_err("unreachable");
    assert!(err.transient() && err.to_string().contains(":1"), "{err}");
    Ok(())
}

/// The pool hands out the same session while it is up, opens a new one when the server ended
/// it or when the pin or the client key differs, and lets idle ones go.
#[tokio::test]
async fn pooled_sessions_are_reused_replaced_and_expire() -> Result<()> {
    let host = tokio::task::spawn_blocking(|| TestHost::start("pool")).await??;
    let pinned = target(&host, HostKeyPolicy::Pinned(host.host_key.clone()))?;
    let pool = ssh::Pool::new(Duration::from_secs(600));
    let sessions = || -> Result<usize> {
        // sshd names each logged-in session process `sshd: root@notty`; this command's own
        // session is one of them. (`[y]`: the pattern does not match grep's own command line.)
        let n = host.ssh("grep -l 'sshd: root@nott[y]' /proc/[0-9]*/cmdline 2>/dev/null | wc -l")?;
        Ok(n.trim().parse::<usize>()? - 1)
    };

    let a = pool.get(&pinned, 1).await?;
    assert_eq!(a.run("echo one", T).await?.trim(), "one");
    a.close().await; // leaves the session to the pool
    let b = pool.get(&pinned, 1).await?;
    assert_eq!(b.run("echo two", T).await?.trim(), "two");
    assert_eq!(pool.opened(), 1, "the second get reused the session");
    assert_eq!(sessions()?, 1, "one session on the server");

    // The server ends the session (a reboot, a killed sshd): the next get opens a new one.
    let _ = host.ssh(
        "for p in $(grep -l 'sshd: root@nott[y]' /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do \
         [ \"$p\" = \"$PPID\" ] || kill \"$p\"; done",
    );
    let c = pool.get(&pinned, 1).await?;
    assert_eq!(c.run("echo three", T).await?.trim(), "three");
    assert_eq!(pool.opened(), 2);

    // Another pin is another entry; a wrong one is refused and never pooled.
    let wrong = HostKeyPolicy::Pinned(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFx4mJ0z3OLr4D0T2l3oCqL6tWcG5dU0m3X3Yk3Yk3Yk".into(),
    );
    let Err(refused) = pool.get(&target(&host, wrong)?, 1).await else { panic!("a wrong pin connected") };
    assert!(matches!(refused, Error::HostKeyMismatch { .. }), "{refused}");
    assert_eq!(pool.opened(), 2);

    // Nothing stays in a pool whose idle time is zero.
    let eager = ssh::Pool::new(Duration::ZERO);
    for _ in 0..2 {
        eager.get(&pinned, 1).await?.run("true", T).await?;
    }
    assert_eq!(eager.opened(), 2);
    Ok(())
}
