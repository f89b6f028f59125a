//! Child processes that cannot outlive the process that started them.
//!
//! Every child is started through `setpriv --pdeathsig KILL`, so the kernel kills it when its
//! parent goes away, whatever the reason: normal exit, a panic, a failed assertion, SIGKILL.
//! The parent-death signal fires when the *thread* that forked the child ends, not the process,
//! so all children are forked from one spawner thread that lives as long as the process.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;

struct Job {
    user: Option<String>,
    program: PathBuf,
    args: Vec<OsString>,
    log: File,
    reply: SyncSender<std::io::Result<Child>>,
}

fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("test-cluster-spawner".into())
            .spawn(move || {
                for job in rx {
                    let stderr = job.log.try_clone();
                    let child = stderr.and_then(|stderr| {
                        let mut cmd = Command::new("setpriv");
                        cmd.arg("--pdeathsig").arg("KILL");
                        if let Some(user) = &job.user {
                            cmd.args(["--reuid", user, "--regid", user, "--init-groups"]);
                        }
                        cmd.arg("--")
                            .arg(&job.program)
                            .args(&job.args)
                            .stdin(Stdio::null())
                            .stdout(job.log)
                            .stderr(stderr)
                            .spawn()
                    });
                    let _ = job.reply.send(child);
                }
                // The sender lives in a static and is never dropped, so this thread (and with it
                // every child's parent-death signal) lasts until the process exits.
            })
            .expect("spawning the test-cluster spawner thread");
        Mutex::new(tx)
    })
}

/// One running component of the control plane, its output going to a log file.
pub struct Process {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn start(
        name: &'static str,
        program: &Path,
        args: Vec<OsString>,
        log_dir: &Path,
    ) -> Result<Self, Error> {
        Self::start_as(name, None, program, args, log_dir)
    }

    /// Like [`Process::start`], as another user (for servers that refuse to run as root).
    pub fn start_as(
        name: &'static str,
        user: Option<&str>,
        program: &Path,
        args: Vec<OsString>,
        log_dir: &Path,
    ) -> Result<Self, Error> {
        let log = log_dir.join(format!("{name}.log"));
        let file = File::create(&log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let (reply, rx) = mpsc::sync_channel(1);
        let job = Job { user: user.map(str::to_owned), program: program.to_owned(), args, log: file, reply };
        spawner().lock().expect("spawner lock").send(job).expect("spawner thread is alive");
        let child = rx
            .recv()
            .expect("spawner thread replies")
            .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
        Ok(Self { name, child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// An error for a component that died early, with the end of its log.
    pub fn died(&mut self, status: ExitStatus) -> Error {
        Error::Exited { process: self.name, status, log: self.log_tail(4096) }
    }

    pub fn log_tail(&self, bytes: u64) -> String {
        let mut out = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            out = String::from_utf8_lossy(&buf).into_owned();
        }
        out
    }

    /// SIGTERM, then SIGKILL if the process is still there after `grace`.
    pub fn stop(mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let mut child = self.child;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait()));
        if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(grace) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = rx.recv();
        }
    }
}
