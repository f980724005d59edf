//! The worker process pool behind the default `'loky'` backend (protocol: `docs/pool.md`).
//!
//! ```text
//!   submit(payload) ─► Scheduler (under a lock; idle worker first, then one prefetch each)
//!        │ small task: written at once by the submitting thread ──frame──► worker 0 (python)
//!        └ large task: queued for worker n's writer thread ─────frame──► worker 1
//!                                     ▲                                        │
//!                                     └── a finished task frees a place: ◄─────┤
//!                                         its reader thread sends the next     │
//!   next_event() ◄── events ◄── reader thread n ◄──frame── Done/Failed ────────┘
//!                         ◄── WorkerDied{exit status, lost tasks} on EOF + waitpid
//! ```
//!
//! A task travels from the caller to the worker's socket with no thread hop in between; only
//! payloads too large for the socket buffer go through a writer thread, so a caller never
//! blocks on a busy worker.
//! Every blocking read, write and wait runs on these Rust threads; the caller only blocks in
//! [`ProcessPool::next_event`], which the bindings call without the GIL. A worker that dies
//! breaks the pool: its event names the exit code or signal, and the owner replaces the pool.
//! Workers leave when their socket closes, and `PR_SET_PDEATHSIG` kills them if the parent
//! dies while they are busy.

mod dispatch;
mod frame;
mod spawn;

use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use dispatch::Scheduler;

pub use frame::{Frame, FrameKind, MAX_FRAME, read_frame, write_frame};
pub use spawn::{
    PARENT_PID_ENV, WORKER_FD, WorkerCommand, WorkerProcess, die_with_parent, spawn_worker,
};

/// Errors of the pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Spawning or talking to a worker failed.
    #[error("worker I/O error: {0}")]
    Io(#[from] io::Error),
    /// A worker sent bytes that are not a valid frame.
    #[error("worker protocol error: {0}")]
    Protocol(String),
    /// The pool was shut down or is broken.
    #[error("the process pool is closed: {0}")]
    Closed(String),
    /// Asked for an impossible pool.
    #[error("invalid pool size {0}: need at least one worker")]
    InvalidSize(usize),
}

/// How a worker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitInfo {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Could not be determined.
    Unknown,
}

impl From<ExitStatus> for ExitInfo {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(sig)) => Self::Signal(sig),
            _ => Self::Unknown,
        }
    }
}

/// What the pool reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A worker finished its start-up.
    Ready {
        /// Its process id.
        pid: u32,
    },
    /// A task returned; the payload is its pickled value.
    Done {
        /// The id [`ProcessPool::submit`] returned.
        task_id: u64,
        /// Opaque result bytes.
        payload: Vec<u8>,
    },
    /// A task raised; the payload is its pickled exception.
    Failed {
        /// The id [`ProcessPool::submit`] returned.
        task_id: u64,
        /// Opaque exception bytes.
        payload: Vec<u8>,
    },
    /// A worker died unexpectedly; the pool is broken.
    WorkerDied {
        /// Its process id.
        pid: u32,
        /// How it ended.
        exit: ExitInfo,
        /// Tasks it was running or had queued.
        lost: Vec<u64>,
    },
}

#[derive(Debug)]
struct Task {
    id: u64,
    payload: Vec<u8>,
}

/// Payloads up to this size may be written by the thread that schedules them, when two of
/// them (a worker holds at most two tasks) fit in the socket's send buffer, so the write
/// never waits for a busy worker. Larger ones go through the worker's writer thread.
const INLINE_PAYLOAD: usize = 32 * 1024;

/// Send buffer asked for on each worker socket (Linux grants it; macOS's default is 8 KiB).
const SEND_BUFFER: usize = 1 << 20;

/// Enlarges the send buffer of `socket` and returns the largest payload that may be written
/// inline: a quarter of the buffer granted (headers and a prefetched frame fit beside it),
/// at most [`INLINE_PAYLOAD`]; 0 disables inline writes.
fn inline_limit(socket: &UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let wanted = libc::c_int::try_from(SEND_BUFFER).unwrap_or(libc::c_int::MAX);
    let mut granted: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is an open socket owned by `socket` for the duration of the calls; the
    // option values point to live `c_int`s of the size passed.
    let ok = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::from_ref(&wanted).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::from_mut(&mut granted).cast(),
            &raw mut len,
        ) == 0
    };
    if !ok {
        return 0;
    }
    (usize::try_from(granted).unwrap_or(0) / 4).min(INLINE_PAYLOAD)
}

struct Worker {
    pid: u32,
    child: Arc<Mutex<WorkerProcess>>,
    socket: UnixStream,
    threads: Vec<JoinHandle<()>>,
}

/// The way to one worker's socket.
struct Outbox {
    /// The write end; held for a whole frame so frames never interleave.
    stream: Arc<Mutex<UnixStream>>,
    /// To the writer thread, for large payloads; dropped to make it send SHUTDOWN.
    queue: Mutex<Option<Sender<Task>>>,
    /// Tasks the worker holds; `None` once it died (late tasks are then dropped: the pool is
    /// broken and its owner fails everything).
    held: Arc<Mutex<Option<Vec<u64>>>>,
    /// Largest payload written inline on this socket (see [`inline_limit`]).
    inline_limit: usize,
}

/// What submitters and reader threads share: the scheduler and the ways to the workers.
struct Hub {
    scheduler: Mutex<Scheduler>,
    outboxes: Vec<Outbox>,
}

impl Hub {
    /// Sends each assigned task to its worker.
    fn deliver(&self, assigned: Vec<(usize, Task)>) {
        for (i, task) in assigned {
            let Some(outbox) = self.outboxes.get(i) else {
                continue;
            };
            match lock(&outbox.held).as_mut() {
                Some(list) => list.push(task.id),
                None => continue,
            }
            if task.payload.len() <= outbox.inline_limit {
                let stream = match outbox.stream.try_lock() {
                    Ok(guard) => Some(guard),
                    Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) => None,
                };
                if let Some(mut stream) = stream {
                    // A failed write means the worker is gone: its reader reports that.
                    let _ = write_frame(&mut *stream, FrameKind::Task, task.id, &task.payload);
                    continue;
                }
            }
            // Large, or the writer thread is busy with a large one: queue behind it.
            if let Some(queue) = lock(&outbox.queue).as_ref() {
                let _ = queue.send(task);
            }
        }
    }

    /// Stops scheduling; each writer thread then sends its worker SHUTDOWN.
    fn close(&self) {
        lock(&self.scheduler).close();
        for outbox in &self.outboxes {
            lock(&outbox.queue).take();
        }
    }
}

/// A pool of worker processes exchanging opaque task and result payloads.
pub struct ProcessPool {
    hub: Arc<Hub>,
    events: Receiver<Event>,
    workers: Mutex<Vec<Worker>>,
    closing: Arc<AtomicBool>,
    broken: Arc<Mutex<Option<String>>>,
    next_id: AtomicU64,
    size: usize,
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProcessPool {
    /// Starts `size` workers at once; `init` is sent to each as its first frame.
    pub fn start(size: usize, command: &WorkerCommand, init: &[u8]) -> Result<Self, PoolError> {
        if size == 0 {
            return Err(PoolError::InvalidSize(size));
        }
        let (event_tx, event_rx) = unbounded::<Event>();
        let closing = Arc::new(AtomicBool::new(false));
        let broken = Arc::new(Mutex::new(None));
        let mut started: Vec<(WorkerProcess, UnixStream)> = Vec::with_capacity(size);
        let mut outboxes = Vec::with_capacity(size);
        let mut queues = Vec::with_capacity(size);
        for _ in 0..size {
            let spawned = spawn_worker(command).and_then(|(child, socket)| {
                let mut init_end = socket.try_clone()?;
                write_frame(&mut init_end, FrameKind::Init, 0, init)?;
                Ok((child, socket, init_end))
            });
            let (child, socket, write_end) = match spawned {
                Ok(parts) => parts,
                Err(e) => {
                    for (mut child, _) in started {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return Err(e.into());
                }
            };
            let (queue_tx, queue_rx) = unbounded::<Task>();
            outboxes.push(Outbox {
                inline_limit: inline_limit(&write_end),
                stream: Arc::new(Mutex::new(write_end)),
                queue: Mutex::new(Some(queue_tx)),
                held: Arc::new(Mutex::new(Some(Vec::new()))),
            });
            queues.push(queue_rx);
            started.push((child, socket));
        }
        let hub = Arc::new(Hub {
            scheduler: Mutex::new(Scheduler::new(size)),
            outboxes,
        });
        let pool = Self {
            hub: Arc::clone(&hub),
            events: event_rx,
            workers: Mutex::new(Vec::with_capacity(size)),
            closing: Arc::clone(&closing),
            broken: Arc::clone(&broken),
            next_id: AtomicU64::new(1),
            size,
        };
        for (index, ((child, socket), queue)) in started.into_iter().zip(queues).enumerate() {
            let links = Links {
                index,
                hub: Arc::clone(&hub),
                queue,
                events: event_tx.clone(),
                closing: Arc::clone(&closing),
                broken: Arc::clone(&broken),
            };
            match start_threads(child, socket, links) {
                Ok(w) => lock(&pool.workers).push(w),
                Err(e) => {
                    pool.terminate();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// Number of workers.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Process ids of the workers.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.workers).iter().map(|w| w.pid).collect()
    }

    /// Why the pool is unusable, if it is.
    pub fn broken(&self) -> Option<String> {
        lock(&self.broken).clone()
    }

    /// Queues a task; returns its id. A small task is written to its worker's socket before
    /// this returns when a worker has room for it.
    pub fn submit(&self, payload: Vec<u8>) -> Result<u64, PoolError> {
        if let Some(reason) = self.broken() {
            return Err(PoolError::Closed(reason));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let assigned = lock(&self.hub.scheduler)
            .submit(Task { id, payload })
            .map_err(|_| PoolError::Closed("shut down".into()))?;
        self.hub.deliver(assigned);
        Ok(id)
    }

    /// The next event, waiting at most `timeout` (`None`: until one arrives or the pool closes).
    /// `Ok(None)` on timeout; `Err(Closed)` once every worker is gone and no event is left.
    pub fn next_event(&self, timeout: Option<Duration>) -> Result<Option<Event>, PoolError> {
        let received = match timeout {
            Some(t) => self.events.recv_timeout(t),
            None => self
                .events
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(event) => Ok(Some(event)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                Err(PoolError::Closed("all workers are gone".into()))
            }
        }
    }

    /// Stops accepting tasks, lets the workers finish what they hold and exit, and waits up to
    /// `grace` for them before killing the rest.
    pub fn shutdown(&self, grace: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        self.hub.close();
        let deadline = Instant::now() + grace;
        let workers: Vec<Worker> = lock(&self.workers).drain(..).collect();
        for w in &workers {
            loop {
                let exited = lock(&w.child)
                    .try_wait()
                    .map(|s| s.is_some())
                    .unwrap_or(true);
                if exited || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        finish(workers);
    }

    /// Kills every worker now (SIGKILL) and releases all threads.
    pub fn terminate(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.hub.close();
        let workers: Vec<Worker> = lock(&self.workers).drain(..).collect();
        for w in &workers {
            let _ = lock(&w.child).kill();
        }
        finish(workers);
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Unblocks, reaps and joins the workers of a closing pool.
fn finish(workers: Vec<Worker>) {
    for w in &workers {
        let _ = lock(&w.child).kill();
        let _ = w.socket.shutdown(std::net::Shutdown::Both);
    }
    for w in workers {
        let _ = lock(&w.child).wait();
        for t in w.threads {
            let _ = t.join();
        }
    }
}

/// A worker's connections to the rest of the pool.
struct Links {
    index: usize,
    hub: Arc<Hub>,
    queue: Receiver<Task>,
    events: Sender<Event>,
    closing: Arc<AtomicBool>,
    broken: Arc<Mutex<Option<String>>>,
}

/// Starts the writer and reader threads of a spawned worker.
fn start_threads(
    child: WorkerProcess,
    socket: UnixStream,
    links: Links,
) -> Result<Worker, PoolError> {
    let Links {
        index,
        hub,
        queue,
        events,
        closing,
        broken,
    } = links;
    let pid = child.id();
    let child = Arc::new(Mutex::new(child));
    // Buffered: a small frame then costs one read instead of three.
    let mut read_end = io::BufReader::with_capacity(64 * 1024, socket.try_clone()?);
    let (stream, held) = match hub.outboxes.get(index) {
        Some(outbox) => (Arc::clone(&outbox.stream), Arc::clone(&outbox.held)),
        None => return Err(PoolError::Protocol(format!("no outbox for worker {index}"))),
    };

    let writer = std::thread::Builder::new()
        .name(format!("joblib-rs-send-{pid}"))
        .spawn(move || {
            for task in queue {
                if write_frame(&mut *lock(&stream), FrameKind::Task, task.id, &task.payload)
                    .is_err()
                {
                    return;
                }
            }
            // The pool let go of the queue: submission is closed.
            let _ = write_frame(&mut *lock(&stream), FrameKind::Shutdown, 0, &[]);
        })?;

    let reader = {
        let child = Arc::clone(&child);
        std::thread::Builder::new()
            .name(format!("joblib-rs-recv-{pid}"))
            .spawn(move || {
                while let Ok(Some(frame)) = read_frame(&mut read_end) {
                    let event = match frame.kind {
                        FrameKind::Ready => Event::Ready { pid },
                        FrameKind::Done | FrameKind::Failed => {
                            if let Some(list) = lock(&held).as_mut() {
                                list.retain(|&id| id != frame.task_id);
                            }
                            // The freed place goes to the next queued task at once.
                            let assigned = lock(&hub.scheduler).done(index);
                            hub.deliver(assigned);
                            if frame.kind == FrameKind::Done {
                                Event::Done {
                                    task_id: frame.task_id,
                                    payload: frame.payload,
                                }
                            } else {
                                Event::Failed {
                                    task_id: frame.task_id,
                                    payload: frame.payload,
                                }
                            }
                        }
                        _ => break,
                    };
                    if events.send(event).is_err() {
                        break;
                    }
                }
                // The worker is gone (or spoke garbage): reap it and say how it ended.
                let lost = lock(&held).take().unwrap_or_default();
                lock(&hub.scheduler).dead(index);
                if closing.load(Ordering::SeqCst) {
                    return;
                }
                let exit = {
                    let mut child = lock(&child);
                    // A worker that closed its socket but lingers is killed: it is useless now.
                    match child.try_wait() {
                        Ok(Some(status)) => ExitInfo::from(status),
                        _ => {
                            std::thread::sleep(Duration::from_millis(50));
                            match child.try_wait() {
                                Ok(Some(status)) => ExitInfo::from(status),
                                _ => {
                                    let _ = child.kill();
                                    child
                                        .wait()
                                        .map(ExitInfo::from)
                                        .unwrap_or(ExitInfo::Unknown)
                                }
                            }
                        }
                    }
                };
                lock(&broken).get_or_insert_with(|| format!("worker {pid} died ({exit:?})"));
                let _ = events.send(Event::WorkerDied { pid, exit, lost });
            })?
    };
    Ok(Worker {
        pid,
        child,
        socket,
        threads: vec![writer, reader],
    })
}

#[cfg(test)]
mod tests;
