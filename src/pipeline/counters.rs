//! Per-worker counters: atomics the worker adds to once per batch (never per record), read by
//! the summary line and the ops API, plus a mutex-guarded mirror of the decoder's per-exporter
//! state and templates. The mirror is updated about once a second with what *changed*
//! ([`goflow_codec::Decoder::take_exporter_changes`], `take_template_changes`), so its upkeep
//! on the worker thread costs the traffic of that second, never a walk over every exporter or
//! template ever seen (which, with tens of thousands of spoofed sources, used to take the
//! worker's whole time).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use goflow_codec::DecoderStats;
use goflow_codec::UnixMicros;
use goflow_codec::decoder::{ExporterChanges, ExporterSnapshot, TemplateInfo};
use goflow_codec::template::TemplateKey;

use crate::ingest::ReceiverKind;

/// One worker's counters. All only grow, except `running`.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// The worker's index (0-based; also its socket's place in the SO_REUSEPORT group).
    pub index: usize,
    /// The receive back-end this worker runs on, once it has started.
    pub receiver: OnceLock<ReceiverKind>,
    /// The receive loop is running (false before start and after the final drain).
    pub running: AtomicBool,
    /// Wake-ups that returned at least one datagram.
    pub batches: AtomicU64,
    /// Datagrams received (truncated ones included).
    pub datagrams: AtomicU64,
    /// Payload bytes received.
    pub bytes: AtomicU64,
    /// Flow records decoded (each went to every backend).
    pub records: AtomicU64,
    /// Data sets (v9/IPFIX) skipped because their template was not known.
    pub records_without_template: AtomicU64,
    /// Data sets whose tail held a partial record.
    pub records_truncated: AtomicU64,
    /// Bytes of data sets skipped for want of their template.
    pub bytes_without_template: AtomicU64,
    /// Template records refused, by reason, and templates evicted to admit new ones.
    pub templates_refused_malformed: AtomicU64,
    pub templates_refused_exporter_full: AtomicU64,
    pub templates_refused_cache_full: AtomicU64,
    pub templates_evicted: AtomicU64,
    /// Datagrams larger than their receive buffer (counted, never parsed).
    pub truncated: AtomicU64,
    /// Datagrams the kernel dropped on this worker's socket (SO_RXQ_OVFL, cumulative).
    pub kernel_drops: AtomicU64,
    /// When `kernel_drops` last rose (Unix microseconds; 0 = never): /healthz's saturation.
    pub last_kernel_drop_us: AtomicI64,
    /// Datagrams the decoder rejected, by error kind.
    pub decode_truncated: AtomicU64,
    pub decode_unsupported_version: AtomicU64,
    pub decode_bad_length: AtomicU64,
    pub decode_bad_template: AtomicU64,
    /// Template records the decoder refused (limits, bad fields).
    pub templates_rejected: AtomicU64,
    /// Data sets (and their bytes) held for their template right now (from the last snapshot).
    pub held_sets: AtomicU64,
    pub held_bytes: AtomicU64,
    /// Receive calls that failed (logged, rate-limited; the loop goes on).
    pub recv_errors: AtomicU64,
    /// Sequence units missing, summed over this worker's exporters (from the last snapshot).
    pub sequence_missing: AtomicU64,
    /// Templates cached by this worker's decoder (from the last snapshot).
    pub templates: AtomicU64,
    /// Exporters with per-exporter state now (bounded by `limits.exporters`).
    pub exporters: AtomicU64,
    /// Datagrams of exporters beyond the bound (decoded, not tracked).
    pub exporters_untracked: AtomicU64,
    /// Exporters forgotten after their idle time.
    pub exporters_expired: AtomicU64,
    /// Sequence streams followed now.
    pub sequence_streams: AtomicU64,
    /// Time spent decoding and encoding batches, nanoseconds.
    pub busy_ns: AtomicU64,
    /// When the last datagram arrived (Unix microseconds; 0 = never).
    pub last_datagram_us: AtomicI64,
    /// The decoder's per-exporter state and templates, about once a second.
    pub snapshot: Mutex<WorkerSnapshot>,
    /// The decoder's saved state (templates, sampling) for `state_dir`, replaced when it
    /// changed (checked with the snapshot) and at least every `SAVE_REFRESH_INTERVAL`.
    pub saved: Mutex<Option<std::sync::Arc<goflow_codec::decoder::saved::SavedState>>>,
    /// Bumped each time `saved` is replaced.
    pub saved_seq: AtomicU64,
    /// Bumped once per turn of the receive loop (at least every 100 ms, traffic or not): the
    /// systemd watchdog's proof that the loop is alive.
    pub heartbeat: AtomicU64,
    /// A new `sampling:` setting from a reload (SIGHUP), taken by the worker between batches;
    /// `reload_seq` is bumped when one is put here.
    pub sampling_reload: Mutex<Option<goflow_codec::SamplingConfig>>,
    pub reload_seq: AtomicU64,
}

/// What a worker's decoder knows, mirrored for the ops API.
#[derive(Clone, Debug, Default)]
pub struct WorkerSnapshot {
    /// When it was last updated (Unix microseconds; 0 = never).
    pub taken_us: UnixMicros,
    /// Every exporter this worker tracks, by address.
    pub exporters: BTreeMap<IpAddr, ExporterSnapshot>,
    /// Every template this worker holds, by key order (exporter, domain, id).
    pub templates: BTreeMap<(IpAddr, u32, u16), TemplateInfo>,
    /// The decoder's own counters.
    pub decoder: DecoderStats,
}

impl WorkerSnapshot {
    /// Applies what changed in the decoder since the last update.
    pub fn apply(
        &mut self,
        exporters: ExporterChanges,
        templates: Vec<(TemplateKey, Option<TemplateInfo>)>,
    ) {
        for a in exporters.forgotten {
            self.exporters.remove(&a);
        }
        for e in exporters.changed {
            self.exporters.insert(e.address, e);
        }
        for (k, t) in templates {
            let key = (k.exporter, k.domain, k.id);
            match t {
                Some(t) => {
                    self.templates.insert(key, t);
                }
                None => {
                    self.templates.remove(&key);
                }
            }
        }
    }
}

impl WorkerCounters {
    pub fn new(index: usize) -> WorkerCounters {
        WorkerCounters {
            index,
            ..WorkerCounters::default()
        }
    }

    /// A copy of the last snapshot.
    pub fn snapshot(&self) -> WorkerSnapshot {
        lock(&self.snapshot).clone()
    }

    /// Datagrams the decoder rejected, all kinds.
    pub fn decode_errors(&self) -> u64 {
        [
            &self.decode_truncated,
            &self.decode_unsupported_version,
            &self.decode_bad_length,
            &self.decode_bad_template,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one batch added, accumulated on the worker's stack and added to the atomics once.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BatchTally {
    pub datagrams: u64,
    pub bytes: u64,
    pub records: u64,
    pub truncated: u64,
}

impl BatchTally {
    pub(crate) fn add_to(&self, c: &WorkerCounters) {
        if self.datagrams > 0 {
            c.batches.fetch_add(1, Ordering::Relaxed);
            c.datagrams.fetch_add(self.datagrams, Ordering::Relaxed);
            c.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        }
        if self.records > 0 {
            c.records.fetch_add(self.records, Ordering::Relaxed);
        }
        if self.truncated > 0 {
            c.truncated.fetch_add(self.truncated, Ordering::Relaxed);
        }
    }
}

/// Copies the decoder's cumulative error counters (stores, not adds: the decoder keeps totals).
pub(crate) fn store_decoder_stats(c: &WorkerCounters, s: &DecoderStats) {
    c.records_without_template
        .store(s.records_without_template, Ordering::Relaxed);
    c.records_truncated
        .store(s.records_truncated, Ordering::Relaxed);
    c.bytes_without_template
        .store(s.bytes_without_template, Ordering::Relaxed);
    c.templates_refused_malformed
        .store(s.templates_refused_malformed, Ordering::Relaxed);
    c.templates_refused_exporter_full
        .store(s.templates_refused_exporter_full, Ordering::Relaxed);
    c.templates_refused_cache_full
        .store(s.templates_refused_cache_full, Ordering::Relaxed);
    c.templates_evicted
        .store(s.templates_evicted, Ordering::Relaxed);
    c.exporters_untracked
        .store(s.exporters_untracked, Ordering::Relaxed);
    c.exporters_expired
        .store(s.exporters_expired, Ordering::Relaxed);
    c.sequence_missing
        .store(s.sequence_missing, Ordering::Relaxed);
    c.decode_truncated
        .store(s.errors_truncated, Ordering::Relaxed);
    c.decode_unsupported_version
        .store(s.errors_unsupported_version, Ordering::Relaxed);
    c.decode_bad_length
        .store(s.errors_bad_length, Ordering::Relaxed);
    c.decode_bad_template
        .store(s.errors_bad_template, Ordering::Relaxed);
    c.templates_rejected
        .store(s.templates_rejected, Ordering::Relaxed);
}
