//! 64-bit time-ordered ids: 42 bits of milliseconds since 2024-01-01, 10 bits of worker,
//! 12 bits of sequence. Rendered as decimal strings in JSON.

use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds from the Unix epoch to 2024-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_704_067_200_000;
const WORKER_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

pub type Snowflake = i64;

/// Lock-free snowflake generator. The state packs (ms << 12 | seq) so one CAS advances both.
#[derive(Debug)]
pub struct IdGenerator {
    worker: u64,
    state: AtomicU64,
}

impl IdGenerator {
    /// `worker` is taken modulo 1024.
    pub fn new(worker: u16) -> Self {
        Self { worker: u64::from(worker) & ((1 << WORKER_BITS) - 1), state: AtomicU64::new(0) }
    }

    /// A worker id derived from randomness, for processes that have no configured one.
    pub fn random_worker() -> Self {
        Self::new(rand::random::<u16>())
    }

    pub fn next_id(&self) -> Snowflake {
        loop {
            let now = (crate::time::now_ms() - EPOCH_MS).max(0) as u64;
            let prev = self.state.load(Ordering::Relaxed);
            let prev_ms = prev >> SEQ_BITS;
            let next = if now > prev_ms {
                now << SEQ_BITS
            } else if (prev & SEQ_MASK) < SEQ_MASK {
                prev + 1
            } else {
                // Sequence exhausted in this millisecond (or the clock went back): borrow the
                // next millisecond rather than repeat an id.
                (prev_ms + 1) << SEQ_BITS
            };
            if self.state.compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                let ms = next >> SEQ_BITS;
                let seq = next & SEQ_MASK;
                return ((ms << (WORKER_BITS + SEQ_BITS)) | (self.worker << SEQ_BITS) | seq) as i64;
            }
        }
    }
}

/// The millisecond timestamp encoded in an id.
pub fn timestamp_ms(id: Snowflake) -> i64 {
    ((id as u64) >> (WORKER_BITS + SEQ_BITS)) as i64 + EPOCH_MS
}

/// The smallest id that could have been made at `ms`, for time-based pagination bounds.
pub fn min_id_at(ms: i64) -> Snowflake {
    (((ms - EPOCH_MS).max(0) as u64) << (WORKER_BITS + SEQ_BITS)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_increasing() {
        let g = IdGenerator::new(3);
        let mut last = 0;
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            let id = g.next_id();
            assert!(id > last);
            assert!(seen.insert(id));
            last = id;
        }
    }

    #[test]
    fn timestamp_round_trips() {
        let g = IdGenerator::new(1);
        let before = crate::time::now_ms();
        let id = g.next_id();
        let ts = timestamp_ms(id);
        assert!(ts >= before && ts <= crate::time::now_ms() + 1000);
        assert!(min_id_at(ts) <= id);
    }
}
