//! How long a waiter busy-polls before it parks, learnt from how its recent waits ended.
//!
//! A poll that catches a message saves a wake-up (tens of microseconds on a VM whose idle vCPUs
//! halt); a poll that ends with nothing is CPU spent for nothing, and the waiter then parks all
//! the same. So a waiter polls only while its conversation is demonstrably hot, and backs off to
//! no polling at all when it is not. The server keeps one [`PollBudget`] per session (waiting
//! for the next request), the client one per connection (waiting for an answer);
//! `docs/configuration.md` (`socket.busy_poll_us`) says what an operator sees.

use std::time::Duration;

/// A message that comes later than this after its wait began shows that the conversation has
/// paused: polling stops at once, and such a wait breaks a run of warm waits.
pub const WARM_GAP: Duration = Duration::from_millis(1);
/// Polls in a row that end with nothing, once polls have caught messages, before polling stops:
/// the budget halves at each (all of it, ½, ¼, ⅛), so a conversation that cools down costs
/// less than twice the budget.
const HALVINGS: u32 = 4;
/// The most warm waits in a row that re-arming can need (see [`PollBudget`]).
const MAX_REARM: u32 = 1024;

/// How a wait for a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// A poll caught the message.
    Caught,
    /// The message came once the waiter had parked, `after` the wait began (wake-up included).
    Parked {
        /// The waiter polled first, and the poll ended with nothing.
        polled: bool,
        /// From the start of the wait to the message.
        after: Duration,
    },
}

/// How long to poll before parking: [`PollBudget::budget`] before each wait, and
/// [`PollBudget::waited`] once the message came.
///
/// - It starts **cold** (no polling). A wait whose message comes within [`WARM_GAP`] is warm;
///   after enough warm waits in a row (one at first) it is **armed** with the whole budget.
/// - Armed, a poll that catches its message keeps the whole budget and proves the arming. A
///   poll that ends with nothing halves the budget if the arming is proven and goes cold at the
///   fourth such poll in a row; an arming not yet proven goes cold at its first miss.
/// - Every arming that goes cold unproven doubles the warm waits the next one needs (up to
///   1,024), so a conversation whose messages always come just after the poll ends costs a
///   poll every 2, 4, … 1,024 waits; a caught message brings it back to one.
/// - A message later than [`WARM_GAP`], or [`PollBudget::paused`], stops polling at once.
#[derive(Debug, Clone)]
pub struct PollBudget {
    max: Duration,
    phase: Phase,
    /// Warm waits in a row needed to re-arm.
    rearm: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No polling; `warm` warm waits in a row seen since.
    Cold { warm: u32 },
    /// Polling for `max / 2^misses`; `proven` once a poll caught a message since arming.
    Armed { misses: u32, proven: bool },
}

impl PollBudget {
    /// A cold budget of at most `max` per wait (zero: never polls).
    pub fn new(max: Duration) -> Self {
        PollBudget {
            max,
            phase: Phase::Cold { warm: 0 },
            rearm: 1,
        }
    }

    /// How long to poll before parking for the next message (zero: park at once).
    pub fn budget(&self) -> Duration {
        match self.phase {
            Phase::Armed { misses, .. } => self.max / (1 << misses),
            Phase::Cold { .. } => Duration::ZERO,
        }
    }

    /// A wait ended this way.
    pub fn waited(&mut self, waited: Waited) {
        self.phase = match (self.phase, waited) {
            (_, Waited::Caught) => {
                self.rearm = 1;
                Phase::Armed {
                    misses: 0,
                    proven: true,
                }
            }
            (Phase::Armed { .. }, Waited::Parked { after, .. }) if after > WARM_GAP => {
                self.paused();
                return;
            }
            (Phase::Armed { misses, proven }, Waited::Parked { polled: true, .. }) => {
                if !proven || misses + 1 >= HALVINGS {
                    self.paused();
                    return;
                }
                Phase::Armed {
                    misses: misses + 1,
                    proven,
                }
            }
            // No poll (no turn was free): nothing learnt about the budget.
            (armed @ Phase::Armed { .. }, Waited::Parked { polled: false, .. }) => armed,
            (Phase::Cold { warm }, Waited::Parked { after, .. }) => {
                let warm = if after > WARM_GAP { 0 } else { warm + 1 };
                if warm >= self.rearm {
                    Phase::Armed {
                        misses: 0,
                        proven: false,
                    }
                } else {
                    Phase::Cold { warm }
                }
            }
        };
    }

    /// The conversation paused (say, a request long after the previous answer): polling stops
    /// until warm waits re-arm it.
    pub fn paused(&mut self) {
        if let Phase::Armed { proven: false, .. } = self.phase {
            self.rearm = (self.rearm * 2).min(MAX_REARM);
        }
        self.phase = Phase::Cold { warm: 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(80);
    /// A message just after any poll would have ended, well within the warm gap.
    const LATE: Duration = Duration::from_micros(300);
    const WARM: Waited = Waited::Parked {
        polled: false,
        after: LATE,
    };
    const MISS: Waited = Waited::Parked {
        polled: true,
        after: LATE,
    };
    const PAUSE: Waited = Waited::Parked {
        polled: false,
        after: Duration::from_millis(100),
    };

    fn micros(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// The budgets before each wait of `waits`, and the one after the last.
    fn budgets(policy: &mut PollBudget, waits: &[Waited]) -> Vec<Duration> {
        let mut seen = vec![policy.budget()];
        for &waited in waits {
            policy.waited(waited);
            seen.push(policy.budget());
        }
        seen
    }

    #[test]
    fn it_starts_cold_and_one_warm_wait_arms_it() {
        let mut policy = PollBudget::new(MAX);
        assert_eq!(budgets(&mut policy, &[WARM]), [micros(0), MAX]);
    }

    #[test]
    fn catches_keep_the_whole_budget_and_misses_halve_it_down_to_zero() {
        let mut policy = PollBudget::new(MAX);
        let waits = [WARM, Waited::Caught, Waited::Caught, MISS, MISS, MISS, MISS];
        let expected = [0, 80, 80, 80, 40, 20, 10, 0].map(micros);
        assert_eq!(budgets(&mut policy, &waits), expected);
        // A miss after the halving started and then a catch: the whole budget again.
        let mut policy = PollBudget::new(MAX);
        let waits = [WARM, Waited::Caught, MISS, MISS, Waited::Caught];
        assert_eq!(
            budgets(&mut policy, &waits),
            [0, 80, 80, 40, 20, 80].map(micros)
        );
    }

    #[test]
    fn after_a_proven_arming_one_warm_wait_rearms_it() {
        let mut policy = PollBudget::new(MAX);
        let waits = [
            WARM,
            Waited::Caught,
            MISS,
            MISS,
            MISS,
            MISS,
            WARM,
            Waited::Caught,
        ];
        let expected = [0, 80, 80, 40, 20, 10, 0, 80, 80].map(micros);
        assert_eq!(budgets(&mut policy, &waits), expected);
    }

    #[test]
    fn each_fruitless_arming_doubles_the_warm_waits_the_next_needs_up_to_the_cap() {
        let mut policy = PollBudget::new(MAX);
        let mut needed = Vec::new();
        for _ in 0..13 {
            let mut warm = 0;
            while policy.budget().is_zero() {
                policy.waited(WARM);
                warm += 1;
            }
            needed.push(warm);
            // The arming's first poll ends with nothing: cold again at once.
            policy.waited(MISS);
            assert_eq!(policy.budget(), Duration::ZERO);
        }
        assert_eq!(
            needed,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1024, 1024]
        );
        // One catch and the next re-arming needs one warm wait again.
        while policy.budget().is_zero() {
            policy.waited(WARM);
        }
        policy.waited(Waited::Caught);
        let waits = [MISS, MISS, MISS, MISS, WARM];
        assert_eq!(
            budgets(&mut policy, &waits),
            [80, 40, 20, 10, 0, 80].map(micros)
        );
    }

    #[test]
    fn a_pause_stops_polling_at_once_and_breaks_a_warm_run() {
        let mut policy = PollBudget::new(MAX);
        let waits = [WARM, Waited::Caught, PAUSE, WARM];
        assert_eq!(budgets(&mut policy, &waits), [0, 80, 80, 0, 80].map(micros));
        // A miss whose message came after the pause: cold too.
        let late_miss = Waited::Parked {
            polled: true,
            after: Duration::from_millis(5),
        };
        assert_eq!(budgets(&mut policy, &[late_miss]), [MAX, micros(0)]);
        // Two warm waits needed (an unproven arming went cold): a pause between them restarts
        // the count.
        let mut policy = PollBudget::new(MAX);
        policy.waited(WARM);
        policy.waited(MISS);
        let waits = [WARM, PAUSE, WARM, WARM];
        assert_eq!(budgets(&mut policy, &waits), [0, 0, 0, 0, 80].map(micros));
        // `paused` does what a late message does.
        policy.waited(Waited::Caught);
        policy.paused();
        assert_eq!(policy.budget(), Duration::ZERO);
    }

    #[test]
    fn a_wait_that_did_not_poll_leaves_the_budget_as_it_was() {
        let mut policy = PollBudget::new(MAX);
        let waits = [WARM, Waited::Caught, MISS, WARM, WARM];
        assert_eq!(
            budgets(&mut policy, &waits),
            [0, 80, 80, 40, 40, 40].map(micros)
        );
    }

    #[test]
    fn a_zero_budget_never_polls() {
        let mut policy = PollBudget::new(Duration::ZERO);
        let seen = budgets(&mut policy, &[WARM, Waited::Caught, WARM]);
        assert!(seen.iter().all(Duration::is_zero), "{seen:?}");
    }
}
