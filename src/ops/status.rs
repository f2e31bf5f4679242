//! What the ops API publishes, as plain serde structs shared by the server (which fills them from
//! the daemon's state through [`OpsSource`]) and the client commands (which read them back from
//! JSON). Also the two judgements made from a [`Status`]: the human `Msg` paragraph the old
//! collector's clients read, and /healthz's verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::histogram::HistogramHub;

/// Where the server reads the daemon's state. Implemented by the daemon (its state is owned by
/// worker and backend threads; these calls read atomics and the snapshots they publish, never
/// block a worker).
pub trait OpsSource: Send + Sync + 'static {
    /// A consistent-enough snapshot of every counter (each value is read once).
    fn status(&self) -> Status;
    /// One page of the templates every worker currently holds (in exporter, domain, id order).
    fn templates(&self, page: &TemplatesQuery) -> TemplatesReport;
    /// /status with one page of the exporter list (`offset`, at most `limit` exporters).
    fn status_page(&self, offset: u64, limit: u64) -> Status {
        self.status().page_exporters(offset, limit)
    }
    /// /healthz's verdict (the daemon answers it without building the exporter list).
    fn health(&self) -> Health {
        self.status().health()
    }
    /// The histograms the workers and backends publish into.
    fn histograms(&self) -> &HistogramHub;
    /// The SQL backends `goflow configure-grafana` makes datasources for (POST /grafana),
    /// passwords included; none unless the daemon says so.
    fn grafana_targets(&self) -> Vec<crate::grafana::SqlTarget> {
        Vec::new()
    }
}

/// GET /status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub version: String,
    pub uptime_secs: u64,
    /// Unix seconds at which the daemon started.
    pub started_unix_secs: u64,
    pub receiver: ReceiverStatus,
    pub backends: Vec<BackendStatus>,
    pub totals: Totals,
    /// One page of the exporters (`?offset=&limit=`; see [`STATUS_EXPORTERS_DEFAULT`]).
    pub exporters: Vec<ExporterStatus>,
    /// Exporters tracked in all (every page together).
    pub exporters_total: u64,
    /// Where this page of `exporters` starts, and where the next one does (none: last page).
    pub exporters_offset: u64,
    pub exporters_next: Option<u64>,
    /// The Kafka frontend, when one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaFrontendStatus>,
    /// One paragraph for humans and for the old collector's clients.
    #[serde(rename = "Msg")]
    pub msg: String,
}

/// The Kafka frontend (a consumer group member).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaFrontendStatus {
    pub group_id: String,
    pub topics: Vec<String>,
    pub format: String,
    pub server: String,
    /// Messages read, their value bytes, flows decoded.
    pub messages: u64,
    pub bytes: u64,
    pub flows: u64,
    /// Rows the backends stored from this frontend (all backends together), per second over
    /// the last second.
    pub rows_stored: u64,
    pub rows_per_sec: f64,
    pub flows_per_sec: f64,
    /// Rows a backend dropped (fatal error), and rows forgotten when their partition was
    /// revoked before they were stored (the next owner reads them again).
    pub rows_dropped: u64,
    pub rows_cancelled: u64,
    /// Skipped messages by reason (empty, truncated, malformed, bad_value, wrong_format).
    pub bad_messages: BTreeMap<String, u64>,
    pub duplicates_skipped: u64,
    pub rebalances: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Reading is paused because the backends hold as much as they may.
    pub paused: bool,
    /// Messages produced and not stored yet, over the assigned partitions.
    pub lag: u64,
    pub partitions: Vec<KafkaPartitionStatus>,
}

/// One assigned partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaPartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// The offset read next (-1: nothing read yet).
    pub next_offset: i64,
    /// The offset every backend has stored up to (-1: unknown yet): where it resumes.
    pub stored_offset: i64,
    /// The partition's high watermark (-1: not known yet).
    pub high_watermark: i64,
    /// `high_watermark - stored_offset` (-1: not known yet).
    pub lag: i64,
}

/// The receive side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReceiverStatus {
    /// `uring` or `mmsg`.
    pub kind: String,
    /// Where it listens.
    pub bind: String,
    /// Configured workers.
    pub workers: usize,
    /// Workers whose receive loop is running.
    pub running: usize,
    /// Unix microseconds of the last time the kernel's drop counter rose (none: never).
    pub last_kernel_drop_unix_us: Option<i64>,
}

/// One configured backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendStatus {
    pub name: String,
    /// The configured type: file, dump, null, postgres, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Connected and its last attempt succeeded.
    pub healthy: bool,
    /// `connecting` (the first attempt has not finished), `connected` or `failed`.
    pub state: String,
    pub rows_written: u64,
    pub rows_dropped: u64,
    /// Unix microseconds of the last rows dropped (queue full or failed; none: never).
    pub last_drop_unix_us: Option<i64>,
    /// Encoded bytes waiting in the backend's queue.
    pub queued_bytes: u64,
    /// Unix microseconds of the last successful flush.
    pub last_flush_unix_us: Option<i64>,
    pub last_flush_duration_us: Option<u64>,
    pub flushes: u64,
    /// Flushes handed to the sink and not yet done, all lanes (only sinks that acknowledge
    /// later, as Kafka's producer, have any: `flushes_in_flight`).
    pub flushes_in_flight: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// What the sink itself reports (e.g. PostgreSQL `table_size`), as JSON values: numbers
    /// as numbers, flags as booleans, text as strings.
    pub sink: BTreeMap<String, serde_json::Value>,
    /// The backend's disk spool, when it has one.
    pub spool: Option<SpoolStatus>,
    /// A Kafka backend's producer (type kafka only).
    pub kafka: Option<KafkaStatus>,
}

/// A Kafka backend's producer: what the brokers acknowledged, what waits for them, why
/// deliveries failed and how long an acknowledgement takes (writers/src/kafka/sink.rs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaStatus {
    /// Messages, flows and message-value bytes the brokers acknowledged.
    pub messages: u64,
    pub flows: u64,
    pub bytes: u64,
    /// Messages handed to the producer, and those of them without a delivery report yet.
    pub messages_sent: u64,
    pub in_flight: u64,
    /// Failed deliveries (after librdkafka's own retries), in all and by reason (timed_out,
    /// broker_down, queue_full, too_large, auth, topic, other). Each went back to the backend's
    /// retry (or its spool).
    pub delivery_errors: u64,
    pub delivery_errors_by_reason: BTreeMap<String, u64>,
    /// Produce-to-acknowledgement time of acknowledged messages.
    pub ack_latency_us: AckLatency,
    /// Acknowledgements per bucket: entry `i` counts those within 2^i µs (and above the
    /// previous bound); the last entry everything longer.
    pub ack_latency_buckets_us: Vec<u64>,
    /// Whether the last metadata request reached a broker.
    pub connected: bool,
    /// Producers replaced because a fatal error (a fenced idempotent producer, ...) left the
    /// previous one unusable.
    pub producer_restarts: u64,
}

/// Produce-to-acknowledgement time summary, microseconds (quantiles are bucket bounds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AckLatency {
    pub count: u64,
    pub sum: u64,
    pub mean: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl KafkaStatus {
    /// Reads the fields a Kafka sink reports (`Sink::status`: JSON values by key); the keys
    /// it used are taken out of `fields`. `None` when it reported none of them.
    pub fn take_from(fields: &mut Vec<(&'static str, String)>) -> Option<KafkaStatus> {
        const KEYS: [&str; 11] = [
            "messages",
            "flows",
            "bytes",
            "messages_sent",
            "in_flight",
            "delivery_errors",
            "delivery_errors_by_reason",
            "ack_latency_us",
            "ack_latency_buckets_us",
            "connected",
            "producer_restarts",
        ];
        let mut obj = serde_json::Map::new();
        fields.retain(|(k, v)| {
            if !KEYS.contains(k) {
                return true;
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(v) {
                obj.insert((*k).to_owned(), v);
            }
            false
        });
        if obj.is_empty() {
            return None;
        }
        serde_json::from_value(serde_json::Value::Object(obj)).ok()
    }
}

/// A backend's disk spool (state_dir/spool/<backend>/).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpoolStatus {
    /// Bytes of segment files on disk, and the bound (`spool_bytes`).
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub segments: u64,
    /// Bytes offered and not yet written to disk.
    pub memory_bytes: u64,
    pub rows_spooled: u64,
    pub rows_replayed: u64,
    /// Rows refused because the spool was full (the newest are refused), or not written.
    pub rows_dropped: u64,
    /// Damaged stretches skipped while replaying, and their bytes.
    pub damaged: u64,
    pub damaged_bytes: u64,
    /// Segments of another format set aside.
    pub incompatible_segments: u64,
    pub write_errors: u64,
    /// Age of the oldest row spooled and not yet stored, seconds (0 = none).
    pub oldest_age_secs: u64,
    /// The stored replay position (the next record id).
    pub position: u64,
}

/// Counters over the whole daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub datagrams: u64,
    pub bytes: u64,
    pub records: u64,
    pub batches: u64,
    /// Units (v5 flows, v9 packets, IPFIX records) exporters sent that never arrived.
    pub sequence_missing: u64,
    pub templates: u64,
    /// Templates loaded from state_dir at start and not announced again since.
    pub templates_restored: u64,
    /// Data sets held for a template not yet known (see codec/src/decoder/held.rs).
    pub held: HeldTotals,
    /// Cisco NSEL connection accounting (see codec/src/decoder/nsel.rs).
    pub nsel: NselTotals,
    pub drops: Drops,
    /// What exporters made the workers remember, against the configured bounds.
    pub state: StateTotals,
}

/// NSEL connection accounting, over all workers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NselTotals {
    /// Rows stored with counters other than sent (teardown totals less what updates carried).
    pub adjusted_records: u64,
    /// Open connections forgotten to make room (their teardown stores full totals).
    pub connections_evicted: u64,
    /// Connections forgotten for age.
    pub connections_expired: u64,
}

/// Data that arrived before its template, over all workers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeldTotals {
    /// Sets and bytes held right now.
    pub sets: u64,
    pub bytes: u64,
    /// Sets held so far; records decoded once their template came; sets dropped unheld
    /// (expired by age, or pushed out to make room; both also count in drops.no_template).
    pub sets_held: u64,
    pub released_records: u64,
    pub expired_sets: u64,
    pub dropped_sets: u64,
}

/// Per-exporter state held by the workers (summed over them), its bounds and what the bounds
/// refused or expired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateTotals {
    /// Exporters with per-exporter state now.
    pub exporters: u64,
    /// The bound on them (`limits.exporters` times the workers).
    pub exporters_max: u64,
    /// Datagrams of exporters beyond the bound (decoded, not tracked).
    pub exporters_untracked_datagrams: u64,
    /// Exporters forgotten after `limits.exporter_idle` seconds of silence.
    pub exporters_expired: u64,
    /// Sequence streams (exporter, domain, version) followed now.
    pub sequence_streams: u64,
    /// The bound on templates (`limits.templates` times the workers).
    pub templates_max: u64,
    /// Template records refused, all reasons ...
    pub templates_rejected: u64,
    /// ... malformed (no fields, too many, zero-length records, ids below 256, bad scope
    /// counts),
    pub templates_refused_malformed: u64,
    /// ... over the exporter's own bound (`limits.templates_per_exporter`),
    pub templates_refused_exporter_full: u64,
    /// ... no room could be made (nothing evictable).
    pub templates_refused_cache_full: u64,
    /// Templates evicted because no data set used them lately, to admit new ones.
    pub templates_evicted: u64,
}

/// Everything lost, by reason. The set of reasons is closed (they are Prometheus label values).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Drops {
    /// Datagrams the kernel dropped (socket buffer full, SO_RXQ_OVFL).
    pub kernel: u64,
    /// Datagrams larger than their receive buffer.
    pub truncated: u64,
    /// Datagrams the decoder rejected, by error kind.
    pub decode_truncated: u64,
    pub decode_unsupported_version: u64,
    pub decode_bad_length: u64,
    pub decode_bad_template: u64,
    /// Data sets whose template was not (yet) known. Counted in sets (and bytes): without the
    /// template a set's record count is unknown, so these are not in [`Drops::records`].
    pub no_template: u64,
    /// Bytes of those data sets.
    pub no_template_bytes: u64,
    /// Data sets whose tail held part of a record (one partial record lost each).
    pub truncated_record: u64,
    /// Records a backend could not queue or store.
    pub backend: u64,
}

impl Drops {
    /// Datagrams lost, by reason (Prometheus `reason` label values).
    pub fn datagram_reasons(&self) -> [(&'static str, u64); 6] {
        [
            ("kernel", self.kernel),
            ("truncated", self.truncated),
            ("decode_truncated", self.decode_truncated),
            (
                "decode_unsupported_version",
                self.decode_unsupported_version,
            ),
            ("decode_bad_length", self.decode_bad_length),
            ("decode_bad_template", self.decode_bad_template),
        ]
    }

    /// Records lost, by reason.
    pub fn record_reasons(&self) -> [(&'static str, u64); 2] {
        [
            ("truncated_record", self.truncated_record),
            ("backend", self.backend),
        ]
    }

    pub fn datagrams(&self) -> u64 {
        self.datagram_reasons()
            .iter()
            .fold(0u64, |a, (_, v)| a.saturating_add(*v))
    }

    pub fn records(&self) -> u64 {
        self.record_reasons()
            .iter()
            .fold(0u64, |a, (_, v)| a.saturating_add(*v))
    }
}

/// One exporter as the workers saw it (all its domains together).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExporterStatus {
    pub address: String,
    /// Observation domains / source ids (v5: engine_type << 8 | engine_id).
    pub domains: Vec<u32>,
    /// NetFlow/IPFIX versions seen: 5, 9, 10.
    pub versions: Vec<u16>,
    pub datagrams: u64,
    pub records: u64,
    /// Bytes of its datagrams.
    pub bytes: u64,
    /// Its data sets skipped because their template was not known.
    pub no_template_sets: u64,
    /// Datagrams from this exporter that ended in a decode error.
    pub errors: u64,
    pub sequence_missing: u64,
    pub sequence_resets: u64,
    /// Unix microseconds of the last datagram.
    pub last_seen_unix_us: Option<i64>,
    /// 1 in N packets; 0 = unknown.
    pub sampling_rate: u32,
    /// `v5_header`, `record`, `sampler`, `exporter` or `unknown`.
    pub sampling_source: String,
    pub templates: u64,
}

/// Templates per /templates page when `limit` is not given, and the most one page holds.
pub const TEMPLATES_PAGE_DEFAULT: u64 = 100;
pub const TEMPLATES_PAGE_MAX: u64 = 1000;
/// Exporters per /status page when `limit` is not given, and the most one page holds.
pub const STATUS_EXPORTERS_DEFAULT: u64 = 1000;
pub const STATUS_EXPORTERS_MAX: u64 = 10_000;

/// Which templates one /templates answer holds: `?offset=N&limit=M&exporter=ADDR`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplatesQuery {
    /// Templates to skip (in exporter, domain, id order).
    pub offset: u64,
    /// At most this many (clamped to 1..=[`TEMPLATES_PAGE_MAX`]).
    pub limit: u64,
    /// Only this exporter's templates.
    pub exporter: Option<std::net::IpAddr>,
}

/// GET /templates: one page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplatesReport {
    /// Templates held in all (matching `exporter` when given), every page together.
    pub total: u64,
    /// Where this page starts, its bound, and where the next page starts (none: last page).
    pub offset: u64,
    pub limit: u64,
    pub next: Option<u64>,
    /// This page's templates, by exporter and domain.
    pub exporters: Vec<ExporterTemplates>,
    /// Templates that carry an information element more than once (Huawei tunnel/VXLAN
    /// templates: outer and inner header); the last occurrence is the one stored.
    pub with_repeated_ies: u64,
}

/// One exporter's templates, by domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExporterTemplates {
    pub address: String,
    pub domains: Vec<DomainTemplates>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DomainTemplates {
    pub domain: u32,
    pub templates: Vec<TemplateInfo>,
}

/// One template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplateInfo {
    pub id: u16,
    /// An options template.
    pub options: bool,
    /// Field specifiers in wire order.
    pub fields: Vec<TemplateField>,
    /// Element ids the template carries more than once (the last occurrence is stored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repeated_ies: Vec<u16>,
    /// Seconds since the template was last announced.
    pub age_secs: u64,
    /// Loaded from state_dir at start and not announced again since.
    pub restored: bool,
}

/// One field specifier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplateField {
    /// Information element id.
    pub id: u16,
    /// Enterprise number (IPFIX), when not an IANA element (0 = IANA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<u32>,
    /// Length on the wire (65535 = variable).
    pub length: u16,
    /// The element's name when goflow knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// GET /healthz.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    pub healthy: bool,
    /// Why not, one line each.
    pub reasons: Vec<String>,
}

/// How long a drop keeps /healthz unhealthy: rows a backend dropped, or datagrams the kernel
/// dropped, within this many seconds make it answer 503.
pub const HEALTH_WINDOW_SECS: u64 = 60;

impl Status {
    /// Healthy when every receive worker runs, every backend is connected and writing, no
    /// backend dropped rows and the kernel dropped no datagram in the last
    /// [`HEALTH_WINDOW_SECS`].
    pub fn health(&self) -> Health {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        self.health_at(now)
    }

    /// [`Status::health`] judged at `now_us` (Unix microseconds).
    pub fn health_at(&self, now_us: i64) -> Health {
        let window_us = (HEALTH_WINDOW_SECS * 1_000_000) as i64;
        let ago = |at: Option<i64>| {
            at.filter(|t| now_us.saturating_sub(*t) < window_us)
                .map(|t| now_us.saturating_sub(t).max(0) / 1_000_000)
        };
        let mut reasons = Vec::new();
        // Without a netflow frontend (a Kafka consumer only) no receive worker is expected.
        if (self.receiver.workers == 0 && self.kafka.is_none())
            || self.receiver.running < self.receiver.workers
        {
            reasons.push(format!(
                "receiver: {} of {} workers running",
                self.receiver.running, self.receiver.workers
            ));
        }
        if let Some(secs) = ago(self.receiver.last_kernel_drop_unix_us) {
            reasons.push(format!(
                "receiver saturated: the kernel dropped datagrams {secs}s ago ({} in all; \
                 raise workers or rcvbuf)",
                self.totals.drops.kernel
            ));
        }
        for b in &self.backends {
            if b.state == "connecting" {
                reasons.push(format!(
                    "backend {} ({}): not connected yet{}",
                    b.name,
                    b.kind,
                    b.last_error
                        .as_deref()
                        .map_or_else(String::new, |e| format!(" ({e})"))
                ));
            } else if !b.healthy {
                let why = b.last_error.as_deref().unwrap_or("unhealthy");
                reasons.push(format!("backend {} ({}): {why}", b.name, b.kind));
            }
            if let Some(secs) = ago(b.last_drop_unix_us) {
                reasons.push(format!(
                    "backend {} ({}): dropped rows {secs}s ago ({} in all; its queue is full \
                     or it cannot write)",
                    b.name, b.kind, b.rows_dropped
                ));
            }
        }
        Health {
            healthy: reasons.is_empty(),
            reasons,
        }
    }

    /// Keeps `limit` exporters from `offset` on (clamped to 1..=[`STATUS_EXPORTERS_MAX`]) and
    /// says where the next page starts.
    pub fn page_exporters(mut self, offset: u64, limit: u64) -> Status {
        let limit = limit.clamp(1, STATUS_EXPORTERS_MAX);
        let total = self.exporters.len() as u64;
        let start = usize::try_from(offset.min(total)).unwrap_or(usize::MAX);
        let end = usize::try_from(offset.saturating_add(limit).min(total)).unwrap_or(usize::MAX);
        self.exporters = self.exporters.drain(start..end).collect();
        self.exporters_total = total;
        self.exporters_offset = offset;
        self.exporters_next = (offset.saturating_add(limit) < total).then(|| offset + limit);
        self
    }

    /// The one-paragraph summary carried as `Msg`.
    pub fn summary_paragraph(&self) -> String {
        let t = &self.totals;
        let mut s = format!(
            "goflow {} up {}, receiving on {} with {} {} worker(s) ({} running); {} datagrams \
             ({} bytes) and {} records from {} exporter(s)",
            self.version,
            human_duration(self.uptime_secs),
            if self.receiver.bind.is_empty() {
                "?"
            } else {
                &self.receiver.bind
            },
            self.receiver.workers,
            if self.receiver.kind.is_empty() {
                "?"
            } else {
                &self.receiver.kind
            },
            self.receiver.running,
            t.datagrams,
            t.bytes,
            t.records,
            self.exporters_total.max(self.exporters.len() as u64),
        );
        let dd = t.drops.datagrams();
        let dr = t.drops.records();
        let ds = t.drops.no_template;
        if dd == 0 && dr == 0 && ds == 0 {
            s.push_str("; nothing dropped");
        } else {
            let _ = write!(
                s,
                "; dropped {dd} datagram(s), {dr} record(s) and {ds} data set(s) without a \
                 template"
            );
            let reasons: Vec<String> = t
                .drops
                .datagram_reasons()
                .iter()
                .chain(t.drops.record_reasons().iter())
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if !reasons.is_empty() {
                let _ = write!(s, " ({})", reasons.join(", "));
            }
        }
        if t.sequence_missing > 0 {
            let _ = write!(
                s,
                "; exporters report {} missing by sequence",
                t.sequence_missing
            );
        }
        if self.backends.is_empty() {
            s.push_str("; no backends.");
        } else {
            let parts: Vec<String> = self
                .backends
                .iter()
                .map(|b| {
                    format!(
                        "{} ({}) {}, {} rows written",
                        b.name,
                        b.kind,
                        if b.healthy { "healthy" } else { "UNHEALTHY" },
                        b.rows_written
                    )
                })
                .collect();
            let _ = write!(s, "; backends: {}.", parts.join("; "));
        }
        s
    }
}

/// `3d 4h`, `2h 5m`, `7m 12s`, `42s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            version: "0.1.0".into(),
            uptime_secs: 125,
            receiver: ReceiverStatus {
                kind: "uring".into(),
                bind: "0.0.0.0:2055".into(),
                workers: 2,
                running: 2,
                ..ReceiverStatus::default()
            },
            backends: vec![BackendStatus {
                name: "pg".into(),
                kind: "postgres".into(),
                healthy: true,
                rows_written: 300,
                ..BackendStatus::default()
            }],
            totals: Totals {
                datagrams: 10,
                records: 300,
                ..Totals::default()
            },
            ..Status::default()
        }
    }

    #[test]
    fn healthy_when_workers_run_and_backends_are_healthy() {
        let mut st = sample();
        assert_eq!(
            st.health(),
            Health {
                healthy: true,
                reasons: vec![]
            }
        );
        st.receiver.running = 1;
        st.backends[0].healthy = false;
        st.backends[0].last_error = Some("connection refused".into());
        let h = st.health();
        assert!(!h.healthy);
        assert_eq!(
            h.reasons,
            [
                "receiver: 1 of 2 workers running",
                "backend pg (postgres): connection refused"
            ]
        );
    }

    #[test]
    fn recent_drops_and_a_backend_not_yet_connected_are_unhealthy() {
        let now = 1_000_000_000_000i64;
        let secs = |s: i64| now - s * 1_000_000;
        let mut st = sample();
        // Drops longer ago than the window do not count.
        st.receiver.last_kernel_drop_unix_us = Some(secs(HEALTH_WINDOW_SECS as i64 + 1));
        st.backends[0].last_drop_unix_us = Some(secs(3600));
        st.backends[0].state = "connected".into();
        assert!(st.health_at(now).healthy, "{:?}", st.health_at(now));
        // Kernel drops 5 s ago: saturated.
        st.receiver.last_kernel_drop_unix_us = Some(secs(5));
        st.totals.drops.kernel = 12;
        let h = st.health_at(now);
        assert!(!h.healthy);
        assert_eq!(h.reasons.len(), 1, "{h:?}");
        assert!(
            h.reasons[0]
                .starts_with("receiver saturated: the kernel dropped datagrams 5s ago (12 in all"),
            "{h:?}"
        );
        // Rows dropped by the backend 2 s ago.
        st.receiver.last_kernel_drop_unix_us = None;
        st.backends[0].last_drop_unix_us = Some(secs(2));
        st.backends[0].rows_dropped = 70;
        let h = st.health_at(now);
        assert_eq!(h.reasons.len(), 1, "{h:?}");
        assert!(
            h.reasons[0].starts_with("backend pg (postgres): dropped rows 2s ago (70 in all"),
            "{h:?}"
        );
        // Still connecting at start, with the error so far.
        st.backends[0].last_drop_unix_us = None;
        st.backends[0].state = "connecting".into();
        st.backends[0].last_error = Some("connection refused".into());
        let h = st.health_at(now);
        assert_eq!(
            h.reasons,
            ["backend pg (postgres): not connected yet (connection refused)"]
        );
    }

    #[test]
    fn exporters_are_paged() {
        let mut st = sample();
        st.exporters = (0..25)
            .map(|i| ExporterStatus {
                address: format!("10.0.0.{i}"),
                ..ExporterStatus::default()
            })
            .collect();
        let p = st.clone().page_exporters(0, 10);
        assert_eq!(
            (p.exporters.len(), p.exporters_total, p.exporters_next),
            (10, 25, Some(10))
        );
        let p = st.clone().page_exporters(20, 10);
        assert_eq!((p.exporters.len(), p.exporters_next), (5, None));
        assert_eq!(p.exporters[0].address, "10.0.0.20");
        let p = st.clone().page_exporters(30, 0);
        assert_eq!(
            (p.exporters.len(), p.exporters_offset, p.exporters_next),
            (0, 30, None)
        );
        assert!(p.summary_paragraph().contains("from 25 exporter(s)"));
    }

    #[test]
    fn msg_names_figures_and_drops() {
        let mut st = sample();
        let m = st.summary_paragraph();
        assert!(m.contains("up 2m 5s"), "{m}");
        assert!(m.contains("10 datagrams"), "{m}");
        assert!(m.contains("300 records from 0 exporter(s)"), "{m}");
        assert!(m.contains("nothing dropped"), "{m}");
        assert!(m.contains("pg (postgres) healthy, 300 rows written"), "{m}");
        st.totals.drops.kernel = 4;
        st.totals.drops.no_template = 7;
        let m = st.summary_paragraph();
        assert!(
            m.contains(
                "dropped 4 datagram(s), 0 record(s) and 7 data set(s) without a template \
                 (kernel 4)"
            ),
            "{m}"
        );
    }

    #[test]
    fn json_uses_the_old_msg_key_and_reads_back() {
        let mut st = sample();
        st.msg = st.summary_paragraph();
        let json = serde_json::to_string(&st).unwrap_or_default();
        assert!(json.contains("\"Msg\":\"goflow 0.1.0 up"), "{json}");
        assert!(json.contains("\"type\":\"postgres\""), "{json}");
        let back: Status = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, st);
    }
}
