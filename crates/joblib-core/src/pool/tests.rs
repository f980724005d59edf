//! Pool tests with real processes: the test binary re-runs itself as a scripted worker.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::time::Duration;

use super::*;

const WORKER_ENV: &str = "JOBLIB_CORE_TEST_WORKER";

/// Entry point of the scripted worker (a no-op test unless started by a pool below).
/// Task payloads are commands: `echo:<bytes>`, `fail:<bytes>`, `exit:<code>`, `sleep:<ms>`,
/// `kill` (SIGKILL itself), `garbage` (writes an invalid frame), `pid`, `cwd`, `env:<name>`,
/// `stdin` (bytes readable on standard input).
#[test]
fn worker_main() {
    if std::env::var_os(WORKER_ENV).is_none() {
        return;
    }
    assert_eq!(die_with_parent().ok(), Some(cfg!(target_os = "linux")));
    // SAFETY: the pool put our socket on WORKER_FD and nothing else in this process owns it.
    let socket = unsafe { File::from_raw_fd(WORKER_FD) };
    let mut input = socket.try_clone().expect("clone");
    let mut output = socket;
    let pid = std::process::id();
    while let Ok(Some(frame)) = read_frame(&mut input) {
        match frame.kind {
            FrameKind::Init => {
                write_frame(&mut output, FrameKind::Ready, 0, &pid.to_le_bytes()).expect("ready")
            }
            FrameKind::Task => {
                let text = String::from_utf8_lossy(&frame.payload).into_owned();
                let (verb, arg) = text.split_once(':').unwrap_or((text.as_str(), ""));
                let reply = |kind, body: &[u8]| {
                    write_frame(
                        &mut output.try_clone().expect("clone"),
                        kind,
                        frame.task_id,
                        body,
                    )
                };
                match verb {
                    "echo" => reply(FrameKind::Done, arg.as_bytes()).expect("reply"),
                    "pid" => reply(FrameKind::Done, pid.to_string().as_bytes()).expect("reply"),
                    "cwd" => {
                        let cwd = std::env::current_dir().expect("cwd");
                        reply(FrameKind::Done, cwd.to_string_lossy().as_bytes()).expect("reply")
                    }
                    "env" => {
                        let value = std::env::var(arg).unwrap_or_else(|_| "<unset>".into());
                        reply(FrameKind::Done, value.as_bytes()).expect("reply")
                    }
                    "stdin" => {
                        use std::io::Read;
                        let mut buf = Vec::new();
                        let n = std::io::stdin().read_to_end(&mut buf).expect("stdin");
                        reply(FrameKind::Done, n.to_string().as_bytes()).expect("reply")
                    }
                    "fail" => reply(FrameKind::Failed, arg.as_bytes()).expect("reply"),
                    "sleep" => {
                        std::thread::sleep(Duration::from_millis(arg.parse().unwrap_or(10)));
                        reply(FrameKind::Done, b"slept").expect("reply");
                    }
                    "exit" => std::process::exit(arg.parse().unwrap_or(1)),
                    // SAFETY: plain libc calls on our own process.
                    "kill" => unsafe {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    },
                    "garbage" => {
                        use std::io::Write;
                        output.write_all(&[0xff; 17]).expect("write");
                    }
                    _ => reply(FrameKind::Failed, b"unknown command").expect("reply"),
                }
            }
            _ => break,
        }
    }
    std::process::exit(0);
}

fn command() -> WorkerCommand {
    WorkerCommand {
        program: std::env::current_exe().expect("test binary"),
        args: [
            "--exact",
            "pool::tests::worker_main",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![(WORKER_ENV.into(), "1".into())],
        cwd: None,
    }
}

fn next(pool: &ProcessPool) -> Event {
    pool.next_event(Some(Duration::from_secs(60)))
        .expect("open")
        .expect("an event within 60 s")
}

/// Collects events until `n` task results arrived (Ready events are skipped).
fn results(pool: &ProcessPool, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(pool) {
            Event::Ready { .. } => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn runs_tasks_on_every_worker() {
    let pool = ProcessPool::start(2, &command(), b"init").unwrap();
    assert_eq!(pool.size(), 2);
    let mut ids: Vec<u64> = (0..50)
        .map(|i| pool.submit(format!("echo:{i}").into_bytes()).unwrap())
        .collect();
    let mut seen = Vec::new();
    for event in results(&pool, 50) {
        match event {
            Event::Done { task_id, payload } => {
                let i = ids.iter().position(|&id| id == task_id).expect("known id");
                assert_eq!(payload, i.to_string().into_bytes());
                seen.push(task_id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.sort_unstable();
    ids.sort_unstable();
    assert_eq!(seen, ids);
    // Both workers took part: ask each its pid while the other is busy sleeping.
    let a = pool.submit(b"sleep:300".to_vec()).unwrap();
    let b = pool.submit(b"pid".to_vec()).unwrap();
    let mut pid_reply = None;
    for event in results(&pool, 2) {
        match event {
            Event::Done { task_id, payload } if task_id == b => {
                pid_reply = Some(String::from_utf8(payload).unwrap().parse::<u32>().unwrap());
            }
            Event::Done { task_id, .. } => assert_eq!(task_id, a),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pool.pids().contains(&pid_reply.unwrap()));
    pool.shutdown(Duration::from_secs(5));
}

#[test]
fn large_and_small_tasks_mix_while_workers_are_busy() {
    // Large payloads go through the writer threads, small ones are written by the
    // submitting thread: every one must arrive whole, whatever the interleaving.
    let pool = ProcessPool::start(2, &command(), b"init").unwrap();
    let busy = [
        pool.submit(b"sleep:100".to_vec()).unwrap(),
        pool.submit(b"sleep:100".to_vec()).unwrap(),
    ];
    let mut expected = std::collections::HashMap::new();
    for i in 0..20usize {
        let body: Vec<u8> = if i % 3 == 0 {
            // ASCII: the test worker echoes text.
            (0..(1 << 20) + i).map(|b| b'a' + (b % 26) as u8).collect()
        } else {
            i.to_string().into_bytes()
        };
        let mut payload = b"echo:".to_vec();
        payload.extend_from_slice(&body);
        expected.insert(pool.submit(payload).unwrap(), body);
    }
    for event in results(&pool, 22) {
        match event {
            Event::Done { task_id, payload } if busy.contains(&task_id) => {
                assert_eq!(payload, b"slept");
            }
            Event::Done { task_id, payload } => {
                let sent = expected.remove(&task_id).expect("known id");
                assert!(sent == payload, "task {task_id} came back altered");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(expected.is_empty());
    pool.shutdown(Duration::from_secs(5));
}

#[test]
fn failures_are_reported_per_task() {
    let pool = ProcessPool::start(1, &command(), b"").unwrap();
    let id = pool.submit(b"fail:boom".to_vec()).unwrap();
    assert_eq!(
        results(&pool, 1),
        vec![Event::Failed {
            task_id: id,
            payload: b"boom".to_vec()
        }]
    );
    let id = pool.submit(b"echo:still fine".to_vec()).unwrap();
    assert_eq!(
        results(&pool, 1),
        vec![Event::Done {
            task_id: id,
            payload: b"still fine".to_vec()
        }]
    );
    assert!(pool.broken().is_none());
}

#[test]
fn a_worker_that_exits_breaks_the_pool_with_its_code() {
    let pool = ProcessPool::start(2, &command(), b"").unwrap();
    let id = pool.submit(b"exit:7".to_vec()).unwrap();
    match results(&pool, 1).pop() {
        Some(Event::WorkerDied { exit, lost, .. }) => {
            assert_eq!(exit, ExitInfo::Code(7));
            assert_eq!(lost, vec![id]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(pool.broken().is_some());
    assert!(matches!(
        pool.submit(b"echo:x".to_vec()),
        Err(PoolError::Closed(_))
    ));
    pool.terminate();
}

#[test]
fn a_killed_worker_reports_its_signal() {
    let pool = ProcessPool::start(1, &command(), b"").unwrap();
    pool.submit(b"kill".to_vec()).unwrap();
    match results(&pool, 1).pop() {
        Some(Event::WorkerDied { exit, .. }) => assert_eq!(exit, ExitInfo::Signal(libc::SIGKILL)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_worker_speaking_garbage_is_dropped() {
    let pool = ProcessPool::start(1, &command(), b"").unwrap();
    pool.submit(b"garbage".to_vec()).unwrap();
    assert!(matches!(
        results(&pool, 1).pop(),
        Some(Event::WorkerDied { .. })
    ));
}

#[test]
fn terminate_kills_busy_workers_promptly() {
    let pool = ProcessPool::start(2, &command(), b"").unwrap();
    let pids = pool.pids();
    for _ in 0..4 {
        pool.submit(b"sleep:60000".to_vec()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    pool.terminate();
    assert!(started.elapsed() < Duration::from_secs(10));
    for pid in pids {
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
        assert!(!alive, "worker {pid} survived terminate");
    }
    // Only start-up events remain: a terminated pool reports no deaths.
    while let Ok(Some(event)) = pool.next_event(Some(Duration::from_secs(1))) {
        assert!(matches!(event, Event::Ready { .. }), "{event:?}");
    }
}

/// The one answer to `command` from a fresh one-worker pool started with `spec`.
fn ask(spec: &WorkerCommand, command: &str) -> String {
    let pool = ProcessPool::start(1, spec, b"init").unwrap();
    pool.submit(command.as_bytes().to_vec()).unwrap();
    match results(&pool, 1).pop() {
        Some(Event::Done { payload, .. }) => String::from_utf8(payload).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn workers_start_in_the_given_folder_with_the_given_environment() {
    let folder = std::env::temp_dir().canonicalize().unwrap();
    let mut spec = command();
    spec.cwd = Some(folder.clone());
    spec.env
        .push(("JOBLIB_CORE_TEST_VALUE".into(), "a=b c".into()));
    assert_eq!(ask(&spec, "cwd"), folder.to_string_lossy());
    assert_eq!(ask(&spec, "env:JOBLIB_CORE_TEST_VALUE"), "a=b c");
    // Inherited from this process, and the parent's pid for the parent-death signal.
    assert_eq!(
        ask(&spec, "env:PATH"),
        std::env::var("PATH").unwrap_or("<unset>".into())
    );
    assert_eq!(
        ask(&spec, &format!("env:{PARENT_PID_ENV}")),
        std::process::id().to_string()
    );
    // Standard input is /dev/null: reading it ends at once.
    assert_eq!(ask(&spec, "stdin"), "0");
}

#[test]
fn a_missing_program_is_an_io_error_naming_the_cause() {
    let mut spec = command();
    spec.program = "/nonexistent/joblib-rs-python".into();
    match ProcessPool::start(1, &spec, b"init") {
        Err(PoolError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    spec.program = "py\0thon".into();
    assert!(matches!(
        ProcessPool::start(1, &spec, b"init"),
        Err(PoolError::Io(_))
    ));
}

#[test]
fn zero_workers_is_an_error() {
    assert!(matches!(
        ProcessPool::start(0, &command(), b""),
        Err(PoolError::InvalidSize(0))
    ));
}

#[test]
fn frames_survive_a_real_socket() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let payload = vec![9u8; 3 << 20];
    let writer = std::thread::spawn(move || write_frame(&mut a, FrameKind::Task, 5, &payload));
    let frame = read_frame(&mut b).unwrap().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!((frame.task_id, frame.payload.len()), (5, 3 << 20));
}

#[test]
fn inline_writes_fit_twice_in_the_granted_send_buffer() {
    let (a, _b) = UnixStream::pair().unwrap();
    let limit = super::inline_limit(&a);
    assert!(limit > 0 && limit <= super::INLINE_PAYLOAD, "limit {limit}");
    // Two inline frames (and their headers) fit without the peer reading anything: a
    // non-blocking write of both must go through whole.
    a.set_nonblocking(true).unwrap();
    let frame = vec![7u8; limit];
    let mut writer = &a;
    for id in 0..2 {
        write_frame(&mut writer, FrameKind::Task, id, &frame).expect("fits in the buffer");
    }
}
