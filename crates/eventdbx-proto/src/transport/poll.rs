//! Turns to busy-poll: a process-wide cap on how many sessions spin on their socket at once.
//!
//! A session that polls its socket instead of parking keeps a thread running. A few of them
//! save wake-ups; too many would hold every runtime worker (or every CPU) and starve the peer
//! they are waiting for. Both the server's sessions and the client's callers take a
//! [`PollSlot`] first and simply wait for readiness when none is free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A turn to busy-poll, counted in the counter it was taken from; given back when dropped.
#[derive(Debug)]
pub struct PollSlot<'a> {
    pollers: &'a AtomicU64,
    rank: u64,
}

impl<'a> PollSlot<'a> {
    /// A turn if fewer than `cap` hold one of `pollers` now. Never lets the count pass `cap`,
    /// however many threads ask at once.
    pub fn take(pollers: &'a AtomicU64, cap: u64) -> Option<Self> {
        let before = pollers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(PollSlot {
            pollers,
            rank: before + 1,
        })
    }

    /// How many turns were held, this one included, when it was taken (for a peak gauge).
    pub fn rank(&self) -> u64 {
        self.rank
    }
}

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        self.pollers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The CPUs this process may run on (read once).
pub fn available_cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many may poll at once when `threads` threads serve the pollers: one per thread but one,
/// at least one, so that pollers never take them all; none on a single CPU, where a poller
/// would only keep the peer from sending.
pub fn poll_cap(threads: usize) -> u64 {
    if available_cpus() < 2 {
        return 0;
    }
    u64::try_from(threads.saturating_sub(1).max(1)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;

    #[test]
    fn turns_stop_at_the_cap_and_come_back_when_dropped() {
        let pollers = AtomicU64::new(0);
        let first = PollSlot::take(&pollers, 2).expect("a free turn");
        let second = PollSlot::take(&pollers, 2).expect("a second turn");
        assert_eq!((first.rank(), second.rank()), (1, 2));
        assert!(PollSlot::take(&pollers, 2).is_none(), "over the cap");
        drop(first);
        let again = PollSlot::take(&pollers, 2).expect("the turn came back");
        assert_eq!(again.rank(), 2);
        drop((second, again));
        assert_eq!(pollers.load(Ordering::SeqCst), 0);
        assert!(
            PollSlot::take(&pollers, 0).is_none(),
            "a zero cap gives no turn"
        );
    }

    #[test]
    fn concurrent_takers_never_pass_the_cap() {
        const CAP: u64 = 3;
        const THREADS: usize = 8;
        const ROUNDS: usize = 2_000;
        let pollers = AtomicU64::new(0);
        let start = Barrier::new(THREADS);
        let granted = std::thread::scope(|scope| {
            let takers: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        let mut granted = 0;
                        for _ in 0..ROUNDS {
                            if let Some(slot) = PollSlot::take(&pollers, CAP) {
                                granted += 1;
                                assert!(slot.rank() <= CAP, "rank {}", slot.rank());
                                let held = pollers.load(Ordering::SeqCst);
                                assert!((1..=CAP).contains(&held), "{held} turns held");
                            }
                        }
                        granted
                    })
                })
                .collect();
            takers
                .into_iter()
                .map(|taker| taker.join().expect("no assertion failed"))
                .sum::<usize>()
        });
        assert!(granted > 0, "some turns were granted");
        assert_eq!(pollers.load(Ordering::SeqCst), 0, "every turn given back");
    }

    #[test]
    fn the_cap_leaves_a_thread_free() {
        if available_cpus() < 2 {
            assert_eq!(poll_cap(8), 0, "no polling on one CPU");
            return;
        }
        assert_eq!(poll_cap(0), 1);
        assert_eq!(poll_cap(1), 1);
        assert_eq!(poll_cap(2), 1);
        assert_eq!(poll_cap(4), 3);
    }
}
