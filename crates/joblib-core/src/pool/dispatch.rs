//! Which worker runs the next task.
//!
//! One dispatcher thread per pool owns the queue of submitted tasks and how many tasks each
//! worker holds. An idle worker always gets the next task. When every worker is busy, one of
//! them gets a second, prefetched task so it starts it the moment it finishes the current one
//! instead of idling for a round trip through the parent: the worker whose current task
//! started last, the least likely to be stuck in a long one. A worker never holds more than
//! [`MAX_HELD`] tasks, so a short task never waits long behind a slow one while another
//! worker is free.

use std::collections::VecDeque;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, select};

use super::Task;

/// Tasks one worker may hold: the one it runs and one prefetched.
pub const MAX_HELD: usize = 2;

/// News from a worker's reader thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Worker `n` finished a task.
    Done(usize),
    /// Worker `n` is gone.
    Dead(usize),
}

/// What the dispatcher knows of one worker.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Alive and accepting tasks.
    pub alive: bool,
    /// Tasks sent and not finished.
    pub held: usize,
    /// When its current task started.
    pub started: Instant,
}

/// The worker to give the next task to, or `None` to wait (see the module documentation).
pub fn pick(slots: &[Slot]) -> Option<usize> {
    let live = || slots.iter().enumerate().filter(|(_, s)| s.alive);
    if let Some((i, _)) = live().find(|(_, s)| s.held == 0) {
        return Some(i);
    }
    live()
        .filter(|(_, s)| s.held < MAX_HELD)
        .max_by_key(|(_, s)| s.started)
        .map(|(i, _)| i)
}

/// The dispatcher loop: runs until the submit side closes or every worker is gone. Dropping
/// `writers` on return tells each writer thread to send its worker the shutdown frame.
pub fn run(tasks: Receiver<Task>, signals: Receiver<Signal>, writers: Vec<Sender<Task>>) {
    let now = Instant::now();
    let mut slots: Vec<Slot> = writers
        .iter()
        .map(|_| Slot {
            alive: true,
            held: 0,
            started: now,
        })
        .collect();
    let mut pending: VecDeque<Task> = VecDeque::new();
    loop {
        while !pending.is_empty() {
            let Some(i) = pick(&slots) else { break };
            let Some(task) = pending.pop_front() else {
                break;
            };
            let slot = &mut slots[i];
            if slot.held == 0 {
                slot.started = Instant::now();
            }
            slot.held += 1;
            if writers[i].send(task).is_err() {
                slot.alive = false;
            }
        }
        if slots.iter().all(|s| !s.alive) {
            return;
        }
        select! {
            recv(tasks) -> task => match task {
                Ok(task) => pending.push_back(task),
                Err(_) => return,
            },
            recv(signals) -> signal => match signal {
                Ok(Signal::Done(i)) => {
                    if let Some(slot) = slots.get_mut(i) {
                        slot.held = slot.held.saturating_sub(1);
                        if slot.held > 0 {
                            // Its prefetched task starts now.
                            slot.started = Instant::now();
                        }
                    }
                }
                Ok(Signal::Dead(i)) => {
                    if let Some(slot) = slots.get_mut(i) {
                        slot.alive = false;
                    }
                }
                Err(_) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn slot(held: usize, started_ms_ago: u64) -> Slot {
        Slot {
            alive: true,
            held,
            started: Instant::now() - Duration::from_millis(started_ms_ago),
        }
    }

    #[test]
    fn idle_workers_come_first() {
        assert_eq!(pick(&[slot(1, 0), slot(0, 500)]), Some(1));
        assert_eq!(pick(&[slot(0, 0), slot(0, 0)]), Some(0));
    }

    #[test]
    fn prefetch_goes_to_the_most_recently_started_worker() {
        // Worker 0 has been in its task for 10 s (maybe a long one): worker 1 gets the spare.
        assert_eq!(pick(&[slot(1, 10_000), slot(1, 5)]), Some(1));
        assert_eq!(pick(&[slot(1, 5), slot(1, 10_000)]), Some(0));
    }

    #[test]
    fn full_or_dead_workers_get_nothing() {
        assert_eq!(pick(&[slot(2, 0), slot(2, 0)]), None);
        let mut dead = slot(0, 0);
        dead.alive = false;
        assert_eq!(pick(&[dead, slot(2, 0)]), None);
        assert_eq!(pick(&[dead, slot(1, 0)]), Some(1));
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn run_spreads_tasks_and_stops_when_submission_closes() {
        let (task_tx, task_rx) = crossbeam_channel::unbounded();
        let (signal_tx, signal_rx) = crossbeam_channel::unbounded();
        let (w0_tx, w0_rx) = crossbeam_channel::unbounded();
        let (w1_tx, w1_rx) = crossbeam_channel::unbounded();
        let dispatcher = std::thread::spawn(move || run(task_rx, signal_rx, vec![w0_tx, w1_tx]));
        for id in 1..=5 {
            task_tx
                .send(Task {
                    id,
                    payload: Vec::new(),
                })
                .unwrap();
        }
        // Two idle workers, then one prefetch each: four tasks out, the fifth waits.
        let got = |rx: &Receiver<Task>| rx.recv_timeout(Duration::from_secs(5)).unwrap().id;
        let mut first = vec![got(&w0_rx), got(&w0_rx), got(&w1_rx), got(&w1_rx)];
        first.sort_unstable();
        assert_eq!(first, vec![1, 2, 3, 4]);
        assert!(w0_rx.recv_timeout(Duration::from_millis(100)).is_err());
        assert!(w1_rx.recv_timeout(Duration::from_millis(1)).is_err());
        signal_tx.send(Signal::Done(1)).unwrap();
        assert_eq!(got(&w1_rx), 5);
        drop(task_tx);
        dispatcher.join().unwrap();
        // The writers' channels are closed: their threads would now send the shutdown frame.
        assert!(w0_rx.recv().is_err());
    }
}
