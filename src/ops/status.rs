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
    /// The templates every worker currently holds.
    fn templates(&self) -> TemplatesReport;
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
    pub exporters: Vec<ExporterStatus>,
    /// One paragraph for humans and for the old collector's clients.
    #[serde(rename = "Msg")]
    pub msg: String,
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
}

/// One configured backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendStatus {
    pub name: String,
    /// The configured type: file, dump, null, postgres, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub healthy: bool,
    pub rows_written: u64,
    pub rows_dropped: u64,
    /// Encoded bytes waiting in the backend's queue.
    pub queued_bytes: u64,
    /// Unix microseconds of the last successful flush.
    pub last_flush_unix_us: Option<i64>,
    pub last_flush_duration_us: Option<u64>,
    pub flushes: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// What the sink itself reports (e.g. PostgreSQL `table_size`), as strings.
    pub sink: BTreeMap<String, String>,
    /// The backend's disk spool, when it has one.
    pub spool: Option<SpoolStatus>,
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
    pub drops: Drops,
    /// What exporters made the workers remember, against the configured bounds.
    pub state: StateTotals,
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

/// GET /templates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplatesReport {
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
    /// Enterprise number (IPFIX), when not an IANA element.
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

impl Status {
    /// Healthy when every receive worker runs and every backend is healthy.
    pub fn health(&self) -> Health {
        let mut reasons = Vec::new();
        if self.receiver.workers == 0 || self.receiver.running < self.receiver.workers {
            reasons.push(format!(
                "receiver: {} of {} workers running",
                self.receiver.running, self.receiver.workers
            ));
        }
        for b in &self.backends {
            if !b.healthy {
                let why = b.last_error.as_deref().unwrap_or("unhealthy");
                reasons.push(format!("backend {} ({}): {why}", b.name, b.kind));
            }
        }
        Health {
            healthy: reasons.is_empty(),
            reasons,
        }
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
            self.exporters.len(),
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
