//! Starting worker processes: socket pair, fd 3, parent-death signal, one spawner thread.
//!
//! Workers are started with `posix_spawn`, which glibc runs as `clone(CLONE_VFORK)`: unlike
//! `fork`, its cost does not grow with the parent's memory (a parent that has imported numpy
//! and holds big arrays forks in tens of milliseconds under load). A spawned child runs no
//! code of ours before `exec`, so the parent-death signal is set by the worker itself, first
//! thing ([`die_with_parent`]), against the parent pid it finds in [`PARENT_PID_ENV`].
//!
//! Linux's `PR_SET_PDEATHSIG` fires when the *thread* that created the child exits, not the
//! process. A pool created from a short-lived Python thread would see its workers killed when
//! that thread ends, so every worker is spawned from one long-lived spawner thread per process.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Mutex, PoisonError};

use crossbeam_channel::{Sender, bounded, unbounded};

/// The file descriptor the worker finds its socket on.
pub const WORKER_FD: i32 = 3;

/// The variable a worker finds its parent's pid in, for [`die_with_parent`].
pub const PARENT_PID_ENV: &str = "JOBLIB_RS_PARENT_PID";

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

/// A started worker process: what the pool needs of `std::process::Child`.
#[derive(Debug)]
pub struct WorkerProcess {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl WorkerProcess {
    /// Its process id.
    pub fn id(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// Sends SIGKILL, unless it was already reaped (its pid may belong to another process).
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: plain syscall on a pid we spawned and have not reaped yet.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw: libc::c_int = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid out pointer.
            let got = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            if got == self.pid {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(Some(status));
            }
            if got == 0 {
                return Ok(None);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.reap(0)?
            .ok_or_else(|| io::Error::other("waitpid returned without a status"))
    }

    /// Its exit status if it has exited, without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }
}

/// A prepared `posix_spawnp` call: the C strings are built by the caller, the call is made
/// by the spawner thread.
struct SpawnRequest {
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    /// The child's end of the socket, never [`WORKER_FD`] itself (see [`spawn_worker`]).
    child_fd: libc::c_int,
}

type SpawnReply = Sender<io::Result<WorkerProcess>>;

fn c_string(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// `posix_spawn*` functions return the error number instead of setting `errno`.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// `posix_spawn_file_actions_t`, destroyed on drop (boxed: it is never moved once made).
struct FileActions(Box<libc::posix_spawn_file_actions_t>);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: an all-zero value is a valid placeholder for a C struct that `init` then
        // fills in; it is only used after `init` succeeded.
        let mut raw: Box<libc::posix_spawn_file_actions_t> =
            Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `raw` points to writable memory of the right type.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut *raw) })?;
        Ok(Self(raw))
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut *self.0);
        }
    }
}

/// `posix_spawnattr_t`, destroyed on drop.
struct SpawnAttr(Box<libc::posix_spawnattr_t>);

impl SpawnAttr {
    /// The child starts with no blocked signals and SIGPIPE at its default (Python ignores
    /// it, and an ignored signal would stay ignored across `exec`), as `std::process` does.
    fn new() -> io::Result<Self> {
        // SAFETY: zeroed placeholder filled in by `init` before any other use.
        let mut raw: Box<libc::posix_spawnattr_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `raw` points to writable memory of the right type.
        check(unsafe { libc::posix_spawnattr_init(&mut *raw) })?;
        let attr = Self(raw);
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut pipe: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to initialised values; the attribute was initialised above.
        unsafe {
            libc::sigemptyset(&mut empty);
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            let attr_ptr = (&*attr.0 as *const libc::posix_spawnattr_t).cast_mut();
            check(libc::posix_spawnattr_setsigmask(attr_ptr, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(attr_ptr, &pipe))?;
            let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(
                attr_ptr,
                flags as libc::c_short,
            ))?;
        }
        Ok(attr)
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            libc::posix_spawnattr_destroy(&mut *self.0);
        }
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

impl SpawnRequest {
    fn run(&self) -> io::Result<WorkerProcess> {
        let Some(program) = self.argv.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no program"));
        };
        let mut actions = FileActions::new()?;
        let attr = SpawnAttr::new()?;
        // SAFETY: valid, initialised actions; the strings outlive the spawn call.
        unsafe {
            check(libc::posix_spawn_file_actions_addopen(
                &mut *actions.0,
                0,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            // dup2 onto a different descriptor: the copy on WORKER_FD is not close-on-exec,
            // the original (close-on-exec) goes away at exec.
            check(libc::posix_spawn_file_actions_adddup2(
                &mut *actions.0,
                self.child_fd,
                WORKER_FD,
            ))?;
            if let Some(cwd) = &self.cwd {
                check(libc::posix_spawn_file_actions_addchdir_np(
                    &mut *actions.0,
                    cwd.as_ptr(),
                ))?;
            }
        }
        let argv = null_terminated(&self.argv);
        let envp = null_terminated(&self.envp);
        let mut pid: libc::pid_t = 0;
        // SAFETY: every pointer is valid for the call: initialised actions and attributes,
        // NUL-terminated strings in NULL-terminated arrays that outlive it.
        check(unsafe {
            libc::posix_spawnp(
                &mut pid,
                program.as_ptr(),
                &*actions.0,
                &*attr.0,
                argv.as_ptr(),
                envp.as_ptr(),
            )
        })?;
        Ok(WorkerProcess { pid, status: None })
    }
}

struct Spawner {
    pid: u32,
    requests: Sender<(SpawnRequest, SpawnReply)>,
}

static SPAWNER: Mutex<Option<Spawner>> = Mutex::new(None);

fn spawner() -> io::Result<Sender<(SpawnRequest, SpawnReply)>> {
    let pid = std::process::id();
    let mut guard = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = guard.as_ref()
        && s.pid == pid
    {
        return Ok(s.requests.clone());
    }
    let (tx, rx) = unbounded::<(SpawnRequest, SpawnReply)>();
    std::thread::Builder::new()
        .name("joblib-rs-spawner".into())
        .spawn(move || {
            for (request, reply) in rx {
                let _ = reply.send(request.run());
            }
        })?;
    *guard = Some(Spawner {
        pid,
        requests: tx.clone(),
    });
    Ok(tx)
}

fn env_entry(key: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut entry = OsString::with_capacity(key.len() + value.len() + 1);
    entry.push(key);
    entry.push("=");
    entry.push(value);
    c_string(entry.as_bytes(), "an environment variable")
}

/// The parent's environment with `extra` set on top, and the parent's pid for
/// [`die_with_parent`].
fn environment(extra: &[(String, String)]) -> io::Result<Vec<CString>> {
    let overridden = |key: &OsStr| {
        key == OsStr::new(PARENT_PID_ENV) || extra.iter().any(|(k, _)| OsStr::new(k) == key)
    };
    let mut envp = Vec::new();
    for (key, value) in std::env::vars_os() {
        if !overridden(&key) {
            envp.push(env_entry(&key, &value)?);
        }
    }
    for (key, value) in extra {
        envp.push(env_entry(OsStr::new(key), OsStr::new(value))?);
    }
    let parent = std::process::id().to_string();
    envp.push(env_entry(OsStr::new(PARENT_PID_ENV), OsStr::new(&parent))?);
    Ok(envp)
}

/// Starts a worker; returns it and the parent's end of its socket.
pub fn spawn_worker(spec: &WorkerCommand) -> io::Result<(WorkerProcess, UnixStream)> {
    let (parent_end, mut child_end) = UnixStream::pair()?;
    if child_end.as_raw_fd() == WORKER_FD {
        // dup2 onto itself would leave close-on-exec set: use a copy on another number
        // (the duplicate is close-on-exec too, so no stray copy reaches the child).
        child_end = child_end.try_clone()?;
    }
    let mut argv = vec![c_string(
        spec.program.as_os_str().as_bytes(),
        "the program",
    )?];
    for arg in &spec.args {
        argv.push(c_string(arg.as_bytes(), "an argument")?);
    }
    let request = SpawnRequest {
        argv,
        envp: environment(&spec.env)?,
        cwd: match &spec.cwd {
            Some(cwd) => Some(c_string(
                cwd.as_os_str().as_bytes(),
                "the working directory",
            )?),
            None => None,
        },
        child_fd: child_end.as_raw_fd(),
    };
    let (reply_tx, reply_rx) = bounded(1);
    spawner()?
        .send((request, reply_tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    let child = reply_rx
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))??;
    drop(child_end);
    Ok((child, parent_end))
}

/// Called by a worker first thing: asks Linux to kill it (SIGKILL) when the thread that
/// spawned it exits, and exits at once if that parent (pid in [`PARENT_PID_ENV`]) is already
/// gone. Returns whether the signal was set (false off Linux, or without the variable).
pub fn die_with_parent() -> io::Result<bool> {
    let Some(expected) = std::env::var_os(PARENT_PID_ENV) else {
        return Ok(false);
    };
    let Some(expected) = expected.to_str().and_then(|s| s.parse::<u32>().ok()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{PARENT_PID_ENV} is not a process id: {expected:?}"),
        ));
    };
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain prctl/getppid syscalls on our own process.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody will signal us.
            if libc::getppid().unsigned_abs() != expected {
                libc::_exit(1);
            }
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = expected;
        Ok(false)
    }
}
