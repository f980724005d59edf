//! Which worker runs the next task.
//!
//! The [`Scheduler`] holds the queue of submitted tasks and how many tasks each worker
//! holds. An idle worker always gets the next task. When every worker is busy, one of them gets a second, prefetched task so it starts it the moment it finishes the current one
//! instead of idling for a round trip through the parent: the worker whose current task
//! started last, the least likely to be stuck in a long one. A worker never holds more than
//! [`MAX_HELD`] tasks, so a short task never waits long behind a slow one while another
//! worker is free.

use std::collections::VecDeque;
use std::time::Instant;

use super::Task;

/// Tasks one worker may hold: the one it runs and one prefetched.
pub const MAX_HELD: usize = 2;

/// What the scheduler knows of one worker.
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

/// The scheduling state of a pool: tasks waiting for a worker and what each worker holds.
///
/// It has no thread of its own. Whoever changes the state (a caller submitting, a reader
/// thread seeing a task finish or a worker die) calls it under the pool's lock and delivers
/// the assignments it returns, so a task reaches a worker without waking any other thread.
#[derive(Debug)]
pub struct Scheduler {
    slots: Vec<Slot>,
    pending: VecDeque<Task>,
    closed: bool,
}

impl Scheduler {
    /// A scheduler for `workers` idle workers.
    pub fn new(workers: usize) -> Self {
        let now = Instant::now();
        Self {
            slots: vec![
                Slot {
                    alive: true,
                    held: 0,
                    started: now,
                };
                workers
            ],
            pending: VecDeque::new(),
            closed: false,
        }
    }

    /// Queues `task`; returns the tasks to send now, with the worker each goes to.
    /// A closed scheduler gives the task back.
    pub fn submit(&mut self, task: Task) -> Result<Vec<(usize, Task)>, Task> {
        if self.closed {
            return Err(task);
        }
        self.pending.push_back(task);
        Ok(self.assign())
    }

    /// Worker `i` finished a task.
    pub fn done(&mut self, i: usize) -> Vec<(usize, Task)> {
        if let Some(slot) = self.slots.get_mut(i) {
            slot.held = slot.held.saturating_sub(1);
            if slot.held > 0 {
                // Its prefetched task starts now.
                slot.started = Instant::now();
            }
        }
        self.assign()
    }

    /// Worker `i` is gone: it gets nothing more.
    pub fn dead(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i) {
            slot.alive = false;
        }
    }

    /// No more tasks: the queued ones are dropped (their owner fails them).
    pub fn close(&mut self) {
        self.closed = true;
        self.pending.clear();
    }

    /// Tasks queued and not yet sent.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    fn assign(&mut self) -> Vec<(usize, Task)> {
        let mut out = Vec::new();
        while !self.pending.is_empty() {
            let Some(i) = pick(&self.slots) else { break };
            let Some(task) = self.pending.pop_front() else {
                break;
            };
            let slot = &mut self.slots[i];
            if slot.held == 0 {
                slot.started = Instant::now();
            }
            slot.held += 1;
            out.push((i, task));
        }
        out
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

    fn task(id: u64) -> Task {
        Task {
            id,
            payload: Vec::new(),
        }
    }

    fn ids(assigned: &[(usize, Task)]) -> Vec<(usize, u64)> {
        assigned.iter().map(|(w, t)| (*w, t.id)).collect()
    }

    #[test]
    fn scheduler_spreads_tasks_then_prefetches_then_waits() {
        let mut s = Scheduler::new(2);
        // Two idle workers, then one prefetch each: four tasks out, the fifth waits.
        let mut out = Vec::new();
        for id in 1..=5 {
            out.extend(ids(&s.submit(task(id)).unwrap()));
        }
        assert_eq!(out.len(), 4);
        assert_eq!(&out[..2], &[(0, 1), (1, 2)]);
        assert_eq!(s.queued(), 1);
        // Worker 1 finishing frees a place: the fifth task goes there at once.
        assert_eq!(ids(&s.done(1)), vec![(1, 5)]);
        assert!(s.done(0).is_empty());
    }

    #[test]
    fn dead_workers_get_nothing_and_closing_drops_the_queue() {
        let mut s = Scheduler::new(2);
        s.dead(0);
        assert_eq!(ids(&s.submit(task(1)).unwrap()), vec![(1, 1)]);
        assert_eq!(ids(&s.submit(task(2)).unwrap()), vec![(1, 2)]);
        assert!(s.submit(task(3)).unwrap().is_empty());
        s.close();
        assert_eq!(s.queued(), 0);
        assert!(s.submit(task(4)).is_err());
        assert!(s.done(1).is_empty());
    }
}
