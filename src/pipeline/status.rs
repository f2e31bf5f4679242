//! The daemon's side of the ops API: [`Shared`] read as an [`OpsSource`]. Every call loads
//! atomics and copies the snapshots the workers publish about once a second; nothing here can
//! block a worker for longer than one snapshot copy.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::ops::source::{merge_exporters, templates_report};
use crate::ops::status::TemplatesQuery;
use crate::ops::status::{
    BackendStatus, Drops, KafkaStatus, ReceiverStatus, StateTotals, Status, Totals as OpsTotals,
};
use crate::ops::{HistogramHub, OpsSource, TemplatesReport};
use goflow_writers::backend::ConnectState;

use super::Shared;

impl OpsSource for Shared {
    fn status(&self) -> Status {
        self.build_status(true)
    }

    fn status_page(&self, offset: u64, limit: u64) -> Status {
        self.build_status(true).page_exporters(offset, limit)
    }

    fn health(&self) -> crate::ops::status::Health {
        self.build_status(false).health()
    }

    fn templates(&self, page: &TemplatesQuery) -> TemplatesReport {
        let guards: Vec<_> = self
            .workers
            .iter()
            .map(|w| super::counters::lock(&w.snapshot))
            .collect();
        templates_report(
            guards.iter().flat_map(|s| s.templates.values()),
            super::worker::unix_micros(),
            page,
        )
    }

    fn histograms(&self) -> &HistogramHub {
        &self.histograms
    }
}

impl Shared {
    /// Every counter; with `full`, also the exporter list and the template counts (which walk
    /// every worker's snapshot: /healthz does without them).
    fn build_status(&self, full: bool) -> Status {
        let uptime_secs = self.started.elapsed().as_secs();
        let t = self.totals();
        // Read under each worker's lock (no copy of the whole mirror); a worker waits for it at
        // most once a second, when it publishes. A template several workers hold (every worker
        // gets the templates restored at start) counts once.
        let (exporters, templates, templates_restored) = if !full {
            (Vec::new(), 0, 0)
        } else {
            let guards: Vec<_> = self
                .workers
                .iter()
                .map(|w| super::counters::lock(&w.snapshot))
                .collect();
            let exporters = merge_exporters(guards.iter().flat_map(|s| s.exporters.values()));
            let mut restored: BTreeMap<(std::net::IpAddr, u32, u16), bool> = BTreeMap::new();
            for (k, t) in guards.iter().flat_map(|s| s.templates.iter()) {
                let r = restored.entry(*k).or_insert(true);
                *r &= t.restored;
            }
            let n = restored.len() as u64;
            let r = restored.values().filter(|r| **r).count() as u64;
            (exporters, n, r)
        };
        let get = |f: fn(&super::WorkerCounters) -> &std::sync::atomic::AtomicU64| {
            self.workers
                .iter()
                .map(|w| f(w).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let drops = Drops {
            kernel: t.kernel_drops,
            truncated: t.truncated,
            decode_truncated: get(|w| &w.decode_truncated),
            decode_unsupported_version: get(|w| &w.decode_unsupported_version),
            decode_bad_length: get(|w| &w.decode_bad_length),
            decode_bad_template: get(|w| &w.decode_bad_template),
            no_template: t.records_without_template,
            truncated_record: get(|w| &w.records_truncated),
            no_template_bytes: get(|w| &w.bytes_without_template),
            backend: t.rows_dropped,
        };
        let backends = self
            .backends
            .iter()
            .map(|b| {
                let mut detail = b.detail();
                let kafka = if b.kind == "kafka" {
                    KafkaStatus::take_from(&mut detail.status)
                } else {
                    None
                };
                let state = b.connect_state();
                let last_drop = b.last_drop_us.load(Ordering::Relaxed);
                let last_flush = b.last_flush_us.load(Ordering::Relaxed);
                BackendStatus {
                    name: b.name.clone(),
                    kind: b.kind.clone(),
                    healthy: state == ConnectState::Connected,
                    state: state.as_str().to_owned(),
                    rows_written: b.rows_written.load(Ordering::Relaxed),
                    rows_dropped: b.rows_dropped(),
                    last_drop_unix_us: (last_drop > 0).then_some(last_drop),
                    queued_bytes: b.queued_bytes.load(Ordering::Relaxed),
                    last_flush_unix_us: (last_flush > 0).then_some(last_flush),
                    last_flush_duration_us: (last_flush > 0)
                        .then(|| b.last_flush_duration_us.load(Ordering::Relaxed)),
                    flushes: b.flushes.load(Ordering::Relaxed),
                    flushes_in_flight: b.flushes_in_flight.load(Ordering::Relaxed),
                    errors: b.errors.load(Ordering::Relaxed),
                    reconnects: b.reconnects.load(Ordering::Relaxed),
                    last_error: detail.last_error,
                    sink: detail
                        .status
                        .into_iter()
                        // Sinks report JSON values; one that is not is shown as a string.
                        .map(|(k, v)| {
                            let v = serde_json::from_str::<serde_json::Value>(&v)
                                .unwrap_or(serde_json::Value::String(v));
                            (k.to_owned(), v)
                        })
                        .collect::<BTreeMap<_, _>>(),
                    spool: b.spool.as_ref().map(|s| spool_status(s)),
                    kafka,
                }
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs,
            started_unix_secs: u64::try_from(self.started_us / 1_000_000).unwrap_or(0),
            receiver: ReceiverStatus {
                kind: self
                    .receiver_kind()
                    .map_or_else(String::new, |k| k.as_str().to_owned()),
                bind: self.bind.to_string(),
                workers: self.workers.len(),
                running: self.running_workers(),
                last_kernel_drop_unix_us: self
                    .workers
                    .iter()
                    .map(|w| w.last_kernel_drop_us.load(Ordering::Relaxed))
                    .max()
                    .filter(|t| *t > 0),
            },
            backends,
            totals: OpsTotals {
                datagrams: t.datagrams,
                bytes: t.bytes,
                records: t.records,
                batches: t.batches,
                sequence_missing: t.sequence_missing,
                templates,
                templates_restored,
                held: {
                    let guards: Vec<_> = self
                        .workers
                        .iter()
                        .map(|w| super::counters::lock(&w.snapshot))
                        .collect();
                    let sum = |f: fn(&goflow_codec::DecoderStats) -> u64| {
                        guards.iter().map(|g| f(&g.decoder)).sum::<u64>()
                    };
                    crate::ops::status::HeldTotals {
                        sets: get(|w| &w.held_sets),
                        bytes: get(|w| &w.held_bytes),
                        sets_held: sum(|d| d.sets_held),
                        released_records: sum(|d| d.held_released_records),
                        expired_sets: sum(|d| d.held_expired_sets),
                        dropped_sets: sum(|d| d.held_dropped_sets),
                    }
                },
                nsel: {
                    let guards: Vec<_> = self
                        .workers
                        .iter()
                        .map(|w| super::counters::lock(&w.snapshot))
                        .collect();
                    let sum = |f: fn(&goflow_codec::DecoderStats) -> u64| {
                        guards.iter().map(|g| f(&g.decoder)).sum::<u64>()
                    };
                    crate::ops::status::NselTotals {
                        adjusted_records: sum(|d| d.nsel_adjusted_records),
                        connections_evicted: sum(|d| d.nsel_connections_evicted),
                        connections_expired: sum(|d| d.nsel_connections_expired),
                    }
                },
                drops,
                state: StateTotals {
                    exporters: get(|w| &w.exporters),
                    exporters_max: (self.decoder.max_exporters as u64)
                        .saturating_mul(self.workers.len() as u64),
                    exporters_untracked_datagrams: get(|w| &w.exporters_untracked),
                    exporters_expired: get(|w| &w.exporters_expired),
                    sequence_streams: get(|w| &w.sequence_streams),
                    templates_max: (self.decoder.max_templates_total as u64)
                        .saturating_mul(self.workers.len() as u64),
                    templates_rejected: get(|w| &w.templates_rejected),
                    templates_refused_malformed: get(|w| &w.templates_refused_malformed),
                    templates_refused_exporter_full: get(|w| &w.templates_refused_exporter_full),
                    templates_refused_cache_full: get(|w| &w.templates_refused_cache_full),
                    templates_evicted: get(|w| &w.templates_evicted),
                },
            },
            exporters_total: exporters.len() as u64,
            exporters_offset: 0,
            exporters_next: None,
            exporters,
            kafka: self.consumers.first().map(|c| kafka_status(c)),
            msg: String::new(),
        }
    }
}

/// A spool's counters for /status.
fn spool_status(s: &goflow_writers::spool::SpoolStats) -> crate::ops::status::SpoolStatus {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let oldest = s.oldest_us.load(Ordering::Relaxed);
    let now = super::worker::unix_micros();
    crate::ops::status::SpoolStatus {
        bytes: get(&s.bytes),
        capacity_bytes: s.capacity_bytes,
        segments: get(&s.segments),
        memory_bytes: get(&s.memory_bytes),
        rows_spooled: get(&s.rows_spooled),
        rows_replayed: get(&s.rows_replayed),
        rows_dropped: s.rows_dropped(),
        damaged: get(&s.damaged),
        damaged_bytes: get(&s.damaged_bytes),
        incompatible_segments: get(&s.incompatible_segments),
        write_errors: get(&s.write_errors),
        oldest_age_secs: if oldest > 0 {
            u64::try_from(now.saturating_sub(oldest) / 1_000_000).unwrap_or(0)
        } else {
            0
        },
        position: get(&s.position),
    }
}

/// The Kafka frontend's counters as /status shows them.
fn kafka_status(c: &crate::consume::ConsumerStats) -> crate::ops::status::KafkaFrontendStatus {
    use crate::consume::decode::BadReason;
    use std::sync::atomic::Ordering::Relaxed;
    let partitions: Vec<crate::ops::status::KafkaPartitionStatus> = c
        .partitions()
        .into_iter()
        .map(|p| crate::ops::status::KafkaPartitionStatus {
            topic: p.topic,
            partition: p.partition,
            next_offset: p.next_offset,
            stored_offset: p.stored_offset,
            high_watermark: p.high_watermark,
            lag: p.lag,
        })
        .collect();
    crate::ops::status::KafkaFrontendStatus {
        group_id: c.group_id.clone(),
        topics: c.topics.clone(),
        format: c.format.to_owned(),
        server: c.server.clone(),
        messages: c.messages.load(Relaxed),
        bytes: c.bytes.load(Relaxed),
        flows: c.flows.load(Relaxed),
        rows_stored: c.rows_stored.load(Relaxed),
        rows_per_sec: c.rows_per_s(),
        flows_per_sec: c.flows_per_s(),
        rows_dropped: c.rows_dropped.load(Relaxed),
        rows_cancelled: c.rows_cancelled.load(Relaxed),
        bad_messages: BadReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), c.bad[r.index()].load(Relaxed)))
            .collect(),
        duplicates_skipped: c.duplicates_skipped.load(Relaxed),
        rebalances: c.rebalances.load(Relaxed),
        errors: c.errors.load(Relaxed),
        last_error: c.last_error(),
        paused: c.paused.load(Relaxed),
        lag: partitions.iter().map(|p| p.lag.max(0) as u64).sum(),
        partitions,
    }
}
