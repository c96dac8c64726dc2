//! Snowflake ids for events and snapshots (`docs/server.md`, "Ids and timestamps").
//!
//! `id = (ms since 2025-01-01T00:00:00Z) << 22 | worker_id << 12 | sequence`. The generator is
//! pure: the caller passes the current time, so the core stays free of clocks and the rules
//! (sequence overflow, a clock that steps back, a floor from stored ids) are testable exactly.

use crate::error::{CoreError, Result};

/// The Snowflake epoch: 2025-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_MS: u64 = 1_735_689_600_000;
/// Largest worker id (10 bits).
pub const MAX_WORKER_ID: u16 = 1023;
const SEQUENCE_BITS: u32 = 12;
const WORKER_BITS: u32 = 10;
const MAX_SEQUENCE: u64 = (1 << SEQUENCE_BITS) - 1;

/// What the generator needs from the caller to issue the next id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The id to use.
    Id(u64),
    /// No id can be issued before this Unix millisecond (sequence exhausted, or the clock is
    /// behind the last id issued): wait until then and ask again.
    WaitUntil(u64),
}

/// Issues strictly increasing ids for one worker.
#[derive(Debug, Clone)]
pub struct SnowflakeGenerator {
    worker_id: u64,
    /// The last id issued (or the floor: the highest id already stored).
    last: u64,
}

impl SnowflakeGenerator {
    /// A generator for `worker_id` that never issues an id at or below `floor` (the highest id
    /// already stored, so a clock stepped back across a restart cannot reissue ids).
    pub fn new(worker_id: u16, floor: u64) -> Result<Self> {
        if worker_id > MAX_WORKER_ID {
            return Err(CoreError::Config(format!(
                "snowflake_worker_id must be at most {MAX_WORKER_ID}, got {worker_id}"
            )));
        }
        Ok(SnowflakeGenerator {
            worker_id: u64::from(worker_id),
            last: floor,
        })
    }

    /// The next id at Unix time `now_ms`.
    pub fn next(&mut self, now_ms: u64) -> Next {
        let now = now_ms.saturating_sub(EPOCH_MS);
        let last_ms = self.last >> (SEQUENCE_BITS + WORKER_BITS);
        let last_worker = (self.last >> SEQUENCE_BITS) & u64::from(MAX_WORKER_ID);
        let last_sequence = self.last & MAX_SEQUENCE;
        let candidate = if now > last_ms {
            compose(now, self.worker_id, 0)
        } else {
            // Same millisecond as the last id (or the clock went back): continue its sequence
            // when the last id was ours, else start above it within that millisecond.
            let sequence = if last_worker == self.worker_id {
                last_sequence + 1
            } else {
                0
            };
            let id = compose(last_ms, self.worker_id, sequence);
            if sequence > MAX_SEQUENCE || id <= self.last {
                return Next::WaitUntil(EPOCH_MS + last_ms + 1);
            }
            id
        };
        self.last = candidate;
        Next::Id(candidate)
    }
}

fn compose(ms: u64, worker: u64, sequence: u64) -> u64 {
    (ms << (SEQUENCE_BITS + WORKER_BITS)) | (worker << SEQUENCE_BITS) | sequence
}

/// The Unix millisecond at which `id` was issued.
pub fn timestamp_ms(id: u64) -> u64 {
    (id >> (SEQUENCE_BITS + WORKER_BITS)) + EPOCH_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(generator: &mut SnowflakeGenerator, now: u64) -> u64 {
        match generator.next(now) {
            Next::Id(id) => id,
            Next::WaitUntil(at) => panic!("unexpected wait until {at}"),
        }
    }

    #[test]
    fn layout_matches_the_spec() {
        let mut generator = SnowflakeGenerator::new(5, 0).expect("worker");
        let id = issue(&mut generator, EPOCH_MS + 1000);
        assert_eq!(id, (1000 << 22) | (5 << 12));
        assert_eq!(timestamp_ms(id), EPOCH_MS + 1000);
    }

    #[test]
    fn ids_increase_within_a_millisecond_and_wait_on_overflow() {
        let mut generator = SnowflakeGenerator::new(1, 0).expect("worker");
        let now = EPOCH_MS + 42;
        let ids: Vec<u64> = (0..=MAX_SEQUENCE)
            .map(|_| issue(&mut generator, now))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(generator.next(now), Next::WaitUntil(now + 1));
        assert!(issue(&mut generator, now + 1) > ids[ids.len() - 1]);
    }

    #[test]
    fn a_clock_stepping_back_never_reissues() {
        let mut generator = SnowflakeGenerator::new(0, 0).expect("worker");
        let first = issue(&mut generator, EPOCH_MS + 5_000);
        let second = issue(&mut generator, EPOCH_MS + 1_000);
        assert!(second > first, "continues the last millisecond's sequence");
    }

    #[test]
    fn the_floor_from_storage_is_respected() {
        let stored = compose(10_000, 3, 7);
        let mut generator = SnowflakeGenerator::new(3, stored).expect("worker");
        assert!(issue(&mut generator, EPOCH_MS + 500) > stored);
        let mut other_worker = SnowflakeGenerator::new(1, stored).expect("worker");
        match other_worker.next(EPOCH_MS + 500) {
            Next::Id(id) => panic!("issued {id} at or below the floor's millisecond"),
            Next::WaitUntil(at) => assert_eq!(at, EPOCH_MS + 10_001),
        }
    }

    #[test]
    fn worker_ids_above_1023_are_a_config_error() {
        let err = SnowflakeGenerator::new(1024, 0).expect_err("too large");
        assert_eq!(err.code(), "config");
    }
}
