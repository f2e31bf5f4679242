//! What the ops API shows about the Kafka frontend: counters (atomics, written by the consumer
//! thread and the backends' lanes) and a per-partition table the consumer thread refreshes
//! about once a second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::decode::BadReason;

/// One assigned partition, as /status shows it. Offsets are Kafka offsets (-1: not known yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// The offset the consumer reads next.
    pub next_offset: i64,
    /// The offset every backend has stored up to (the lowest of them): where this partition
    /// resumes after a restart.
    pub stored_offset: i64,
    /// The partition's high watermark (the offset the next produced message gets).
    pub high_watermark: i64,
    /// Messages produced but not stored yet: `high_watermark - stored_offset`.
    pub lag: i64,
}

/// The Kafka frontend's counters. Counters only grow.
#[derive(Debug)]
pub struct ConsumerStats {
    pub group_id: String,
    pub topics: Vec<String>,
    pub format: &'static str,
    /// Brokers (no secrets).
    pub server: String,
    /// Messages read (bad ones included), their value bytes, flows decoded.
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub flows: AtomicU64,
    /// Messages skipped, by [`BadReason::index`].
    pub bad: [AtomicU64; BadReason::ALL.len()],
    /// Messages delivered twice by the client (a lower offset than already read), skipped.
    pub duplicates_skipped: AtomicU64,
    /// Rows the backends stored from this frontend (all backends together).
    pub rows_stored: AtomicU64,
    /// Rows the backends dropped (a fatal error; counted by the backend too).
    pub rows_dropped: AtomicU64,
    /// Rows handed to a backend and forgotten because their partition was revoked before they
    /// were stored (its next owner reads them again).
    pub rows_cancelled: AtomicU64,
    /// Rebalances (assignments and revocations).
    pub rebalances: AtomicU64,
    /// Consumer errors reported by the client (broker down, ...).
    pub errors: AtomicU64,
    /// Reading is paused: the backends hold as much as they may.
    pub paused: AtomicBool,
    /// Rows per second stored, over the last refresh interval (f64 bits).
    rows_per_s: AtomicU64,
    /// Flows per second decoded, over the last refresh interval (f64 bits).
    flows_per_s: AtomicU64,
    partitions: Mutex<Vec<PartitionStatus>>,
    last_error: Mutex<Option<String>>,
}

impl ConsumerStats {
    pub fn new(
        group_id: String,
        topics: Vec<String>,
        format: &'static str,
        server: String,
    ) -> ConsumerStats {
        ConsumerStats {
            group_id,
            topics,
            format,
            server,
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            flows: AtomicU64::new(0),
            bad: Default::default(),
            duplicates_skipped: AtomicU64::new(0),
            rows_stored: AtomicU64::new(0),
            rows_dropped: AtomicU64::new(0),
            rows_cancelled: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            rows_per_s: AtomicU64::new(0),
            flows_per_s: AtomicU64::new(0),
            partitions: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
        }
    }

    pub fn bad_total(&self) -> u64 {
        self.bad.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn partitions(&self) -> Vec<PartitionStatus> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_partitions(&self, p: Vec<PartitionStatus>) {
        *self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = p;
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_last_error(&self, e: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e);
    }

    pub fn rows_per_s(&self) -> f64 {
        f64::from_bits(self.rows_per_s.load(Ordering::Relaxed))
    }

    pub fn flows_per_s(&self) -> f64 {
        f64::from_bits(self.flows_per_s.load(Ordering::Relaxed))
    }

    pub fn set_rates(&self, rows: f64, flows: f64) {
        self.rows_per_s.store(rows.to_bits(), Ordering::Relaxed);
        self.flows_per_s.store(flows.to_bits(), Ordering::Relaxed);
    }

    /// The sum of every assigned partition's lag.
    pub fn lag_total(&self) -> i64 {
        self.partitions().iter().map(|p| p.lag.max(0)).sum()
    }
}
