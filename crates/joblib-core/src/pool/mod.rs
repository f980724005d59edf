//! The worker process pool behind the default `'loky'` backend (protocol: `docs/pool.md`).
//!
//! ```text
//!   submit(payload) ──► tasks ──► dispatcher ──┬──► writer thread 0 ──frame──► worker 0 (python)
//!                                  ▲ (idle first,└──► writer thread 1 ──frame──► worker 1
//!                                  │  then one prefetch per busy worker)          │
//!                                  └── Done(n) / Dead(n) signals ◄─┐              │
//!   next_event() ◄── events ◄── reader thread 0 ◄──frame── Done/Failed ───────────┘
//!                         ◄── reader thread 1 ◄── ...
//!                         ◄── WorkerDied{exit status, lost tasks} on EOF + waitpid
//! ```
//!
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
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use dispatch::Signal;

pub use frame::{Frame, FrameKind, MAX_FRAME, read_frame, write_frame};
pub use spawn::{WORKER_FD, WorkerCommand, spawn_worker};

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

struct Task {
    id: u64,
    payload: Vec<u8>,
}

struct Worker {
    pid: u32,
    child: Arc<Mutex<Child>>,
    socket: UnixStream,
    threads: Vec<JoinHandle<()>>,
}

/// A pool of worker processes exchanging opaque task and result payloads.
pub struct ProcessPool {
    tasks: Mutex<Option<Sender<Task>>>,
    events: Receiver<Event>,
    workers: Mutex<Vec<Worker>>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
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
        let (task_tx, task_rx) = unbounded::<Task>();
        let (event_tx, event_rx) = unbounded::<Event>();
        let (signal_tx, signal_rx) = unbounded::<Signal>();
        let closing = Arc::new(AtomicBool::new(false));
        let broken = Arc::new(Mutex::new(None));
        let pool = Self {
            tasks: Mutex::new(Some(task_tx)),
            events: event_rx,
            workers: Mutex::new(Vec::with_capacity(size)),
            dispatcher: Mutex::new(None),
            closing: Arc::clone(&closing),
            broken: Arc::clone(&broken),
            next_id: AtomicU64::new(1),
            size,
        };
        let mut writers = Vec::with_capacity(size);
        for index in 0..size {
            let (writer_tx, writer_rx) = unbounded::<Task>();
            let links = Links {
                index,
                tasks: writer_rx,
                signals: signal_tx.clone(),
                events: event_tx.clone(),
                closing: Arc::clone(&closing),
                broken: Arc::clone(&broken),
            };
            match start_worker(command, init, links) {
                Ok(w) => lock(&pool.workers).push(w),
                Err(e) => {
                    pool.terminate();
                    return Err(e);
                }
            }
            writers.push(writer_tx);
        }
        let dispatcher = std::thread::Builder::new()
            .name("joblib-rs-dispatch".into())
            .spawn(move || dispatch::run(task_rx, signal_rx, writers));
        match dispatcher {
            Ok(handle) => *lock(&pool.dispatcher) = Some(handle),
            Err(e) => {
                pool.terminate();
                return Err(e.into());
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

    /// Queues a task; returns its id.
    pub fn submit(&self, payload: Vec<u8>) -> Result<u64, PoolError> {
        if let Some(reason) = self.broken() {
            return Err(PoolError::Closed(reason));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let guard = lock(&self.tasks);
        let sender = guard
            .as_ref()
            .ok_or_else(|| PoolError::Closed("shut down".into()))?;
        sender
            .send(Task { id, payload })
            .map_err(|_| PoolError::Closed("shut down".into()))?;
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
        lock(&self.tasks).take();
        let deadline = Instant::now() + grace;
        let workers: Vec<Worker> = lock(&self.workers).drain(..).collect();
        self.join_dispatcher();
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
        lock(&self.tasks).take();
        let workers: Vec<Worker> = lock(&self.workers).drain(..).collect();
        for w in &workers {
            let _ = lock(&w.child).kill();
        }
        self.join_dispatcher();
        finish(workers);
    }

    /// The dispatcher returns once submission is closed (the task sender dropped above).
    fn join_dispatcher(&self) {
        if let Some(handle) = lock(&self.dispatcher).take() {
            let _ = handle.join();
        }
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
    tasks: Receiver<Task>,
    signals: Sender<Signal>,
    events: Sender<Event>,
    closing: Arc<AtomicBool>,
    broken: Arc<Mutex<Option<String>>>,
}

fn start_worker(command: &WorkerCommand, init: &[u8], links: Links) -> Result<Worker, PoolError> {
    let Links {
        index,
        tasks,
        signals,
        events,
        closing,
        broken,
    } = links;
    let (child, socket) = spawn_worker(command)?;
    let pid = child.id();
    let child = Arc::new(Mutex::new(child));
    let mut write_end = socket.try_clone()?;
    let mut read_end = socket.try_clone()?;
    write_frame(&mut write_end, FrameKind::Init, 0, init)?;
    // Tasks this worker holds; `None` once it died (late tasks are then dropped: the pool is
    // broken and its owner fails everything).
    let held: Arc<Mutex<Option<Vec<u64>>>> = Arc::new(Mutex::new(Some(Vec::new())));

    let writer = {
        let held = Arc::clone(&held);
        std::thread::Builder::new()
            .name(format!("joblib-rs-send-{pid}"))
            .spawn(move || {
                for task in tasks {
                    match lock(&held).as_mut() {
                        Some(list) => list.push(task.id),
                        None => return,
                    }
                    if write_frame(&mut write_end, FrameKind::Task, task.id, &task.payload).is_err()
                    {
                        return;
                    }
                }
                // The dispatcher let go: submission is closed.
                let _ = write_frame(&mut write_end, FrameKind::Shutdown, 0, &[]);
            })?
    };

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
                            let _ = signals.send(Signal::Done(index));
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
                let _ = signals.send(Signal::Dead(index));
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
