//! Starting worker processes: socket pair, fd 3, parent-death signal, one spawner thread.
//!
//! Linux's `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the
//! process. A pool created from a short-lived Python thread would see its workers killed when
//! that thread ends, so every worker is forked from one long-lived spawner thread per process.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use crossbeam_channel::{Sender, bounded, unbounded};

/// The file descriptor the worker finds its socket on.
pub const WORKER_FD: i32 = 3;

/// How to start one worker.
#[derive(Clone, Debug, Default)]
pub struct WorkerCommand {
    /// The executable (the parent's Python interpreter).
    pub program: PathBuf,
    /// Its arguments (`-m joblib_rs._worker`).
    pub args: Vec<String>,
    /// Environment variables to set on top of the parent's.
    pub env: Vec<(String, String)>,
    /// Working directory (the parent's).
    pub cwd: Option<PathBuf>,
}

type SpawnReply = Sender<io::Result<Child>>;

struct Spawner {
    pid: u32,
    requests: Sender<(Command, SpawnReply)>,
}

static SPAWNER: Mutex<Option<Spawner>> = Mutex::new(None);

fn spawner() -> io::Result<Sender<(Command, SpawnReply)>> {
    let pid = std::process::id();
    let mut guard = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = guard.as_ref()
        && s.pid == pid
    {
        return Ok(s.requests.clone());
    }
    let (tx, rx) = unbounded::<(Command, SpawnReply)>();
    std::thread::Builder::new()
        .name("joblib-rs-spawner".into())
        .spawn(move || {
            for (mut command, reply) in rx {
                let _ = reply.send(command.spawn());
            }
        })?;
    *guard = Some(Spawner {
        pid,
        requests: tx.clone(),
    });
    Ok(tx)
}

/// Starts a worker; returns the child and the parent's end of its socket.
pub fn spawn_worker(spec: &WorkerCommand) -> io::Result<(Child, UnixStream)> {
    let (parent_end, child_end) = UnixStream::pair()?;
    let child_fd = child_end.as_raw_fd();
    let parent_pid = std::process::id();
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let hook = move || -> io::Result<()> {
        // SAFETY: runs in the forked child before exec: only async-signal-safe libc calls.
        unsafe {
            if child_fd == WORKER_FD {
                // dup2 onto itself would keep close-on-exec set: clear it instead.
                let flags = libc::fcntl(child_fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(child_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(child_fd, WORKER_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before the prctl: then nobody will signal us.
                if libc::getppid() as u32 != parent_pid {
                    libc::_exit(1);
                }
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions (fcntl, dup2, prctl, getppid,
    // _exit) and touches no locks or allocations.
    unsafe {
        command.pre_exec(hook);
    }
    let (reply_tx, reply_rx) = bounded(1);
    spawner()?
        .send((command, reply_tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    let child = reply_rx
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))??;
    drop(child_end);
    Ok((child, parent_end))
}
