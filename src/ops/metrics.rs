//! GET /metrics: the Prometheus text exposition format, version 0.0.4. Names follow
//! `goflow_<subsystem>_<what>_<unit>`, counters end in `_total`, times are in seconds (the
//! Prometheus base unit; the histograms record microseconds), and every label value comes from a
//! closed set: drop reasons, decode error kinds, the configured backends' names and types, the
//! receiver kind. Per-exporter detail stays on /status. Histograms are exported as summaries
//! (since start) with the quantiles hdrhistogram gives and an exact `_sum`.
//!
//! [`parse`] is a strict reader of the same format, used by the tests (and `promtool check
//! metrics` where it is installed).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::histogram::{HistogramReport, StatsReport, Summary};
use super::status::Status;

/// The content type of the exposition format this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metric families written one after another. Each family's HELP and TYPE come first, then its
/// samples; a family is written once.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
}

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, value: &str) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }

    /// A counter family; `name` must end in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, u64)]) {
        debug_assert!(name.ends_with("_total"), "{name}");
        self.header(name, "counter", help);
        for (labels, v) in samples {
            self.sample(name, labels, &v.to_string());
        }
    }

    /// A counter family of floats (seconds); `name` must end in `_total`.
    pub fn counter_f64(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) {
        debug_assert!(name.ends_with("_total"), "{name}");
        self.header(name, "counter", help);
        for (labels, v) in samples {
            self.sample(name, labels, &format_f64(*v));
        }
    }

    /// A gauge family of integers.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, u64)]) {
        self.header(name, "gauge", help);
        for (labels, v) in samples {
            self.sample(name, labels, &v.to_string());
        }
    }

    /// A gauge family of floats.
    pub fn gauge_f64(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) {
        self.header(name, "gauge", help);
        for (labels, v) in samples {
            self.sample(name, labels, &format_f64(*v));
        }
    }

    /// A summary family: quantiles 0.5, 0.9, 0.99, 0.999 plus `_sum` and `_count`, each
    /// histogram value divided by `divisor` (1e6 turns microseconds into seconds).
    pub fn summary(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(Labels<'_>, &Summary)],
        divisor: f64,
    ) {
        self.header(name, "summary", help);
        for (labels, s) in samples {
            for (q, v) in [
                ("0.5", s.p50),
                ("0.9", s.p90),
                ("0.99", s.p99),
                ("0.999", s.p999),
            ] {
                let mut l: Vec<(&str, &str)> = labels.to_vec();
                l.push(("quantile", q));
                // An empty summary has no quantiles: NaN, as client libraries write.
                let value = if s.count == 0 {
                    f64::NAN
                } else {
                    v as f64 / divisor
                };
                self.sample(name, &l, &format_f64(value));
            }
            self.sample(
                &format!("{name}_sum"),
                labels,
                &format_f64(s.sum as f64 / divisor),
            );
            self.sample(&format!("{name}_count"), labels, &s.count.to_string());
        }
    }
}

impl Writer {
    /// A histogram family: per sample its cumulative buckets (upper bound, count at or below
    /// it; the `+Inf` bucket is added from `count`), `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, help: &str, samples: &[HistogramSample<'_>]) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for s in samples {
            for (le, n) in s
                .buckets
                .iter()
                .map(|(le, n)| (format_f64(*le), *n))
                .chain([("+Inf".to_owned(), s.count)])
            {
                let mut l: Vec<(&str, &str)> = s.labels.to_vec();
                l.push(("le", &le));
                self.sample(&bucket, &l, &n.to_string());
            }
            self.sample(&format!("{name}_sum"), s.labels, &format_f64(s.sum));
            self.sample(&format!("{name}_count"), s.labels, &s.count.to_string());
        }
    }

    /// A histogram family: the cumulative `_bucket` series at each fixed bound (`le`, divided
    /// by `divisor`) and `+Inf`, then `_sum` and `_count`.
    pub fn histogram_of(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(Labels<'_>, &Summary)],
        divisor: f64,
    ) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (labels, s) in samples {
            for b in &s.cumulative {
                let le = format_f64(b.le as f64 / divisor);
                let mut l: Vec<(&str, &str)> = labels.to_vec();
                l.push(("le", &le));
                self.sample(&bucket, &l, &b.count.to_string());
            }
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", "+Inf"));
            self.sample(&bucket, &l, &s.count.to_string());
            self.sample(
                &format!("{name}_sum"),
                labels,
                &format_f64(s.sum as f64 / divisor),
            );
            self.sample(&format!("{name}_count"), labels, &s.count.to_string());
        }
    }
}

/// One labelled histogram for [`Writer::histogram`].
#[derive(Debug)]
pub struct HistogramSample<'a> {
    pub labels: Labels<'a>,
    /// (upper bound, cumulative count), ascending.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// The smallest Kafka ack-latency bucket exported: 2^7 µs (the ones below fold into it).
const KAFKA_ACK_FIRST_BUCKET: usize = 7;
/// Exporters with series of their own on /metrics (those that sent the most flow records;
/// exporters that sent no valid record never get one). The rest are summed under
/// `exporter="other"` and counted in `goflow_exporter_series_folded`, so spoofed sources
/// cannot grow the page or a Prometheus server's series count.
pub const EXPORTER_SERIES_MAX: usize = 200;

/// The label value the folded exporters share.
pub const OTHER_EXPORTER: &str = "other";

/// This process as the Prometheus client libraries describe one (`process_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
}

impl ProcessStats {
    /// Read from the kernel now (/proc/self and the process CPU clock); what cannot be read
    /// stays 0.
    pub fn read() -> ProcessStats {
        let cpu = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(key)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
                * 1024
        };
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let max_fds = limits
            .lines()
            .find_map(|l| {
                l.strip_prefix("Max open files")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        ProcessStats {
            cpu_seconds: cpu.tv_sec as f64 + cpu.tv_nsec as f64 / 1e9,
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
            max_fds,
        }
    }
}

/// The backends this build can write to (`goflow_build_info`'s `backends` label).
pub fn built_backends() -> String {
    let mut b = vec!["file", "dump", "null", "postgres", "timescale"];
    if cfg!(feature = "mysql") {
        b.push("mysql");
    }
    if cfg!(feature = "kafka") {
        b.push("kafka");
    }
    b.join(",")
}

/// The commit this binary was built from (build.rs; `unknown` outside a git checkout).
pub const COMMIT: &str = env!("GOFLOW_COMMIT");

/// A float as the exposition format spells it.
pub fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // `{}` never uses exponent notation and round-trips.
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Microseconds per second: histogram values are divided by it (dividing, not multiplying by
/// 1e-6, keeps 200 µs printing as 0.0002).
const US_PER_S: f64 = 1e6;

/// The whole /metrics page, with this process's `process_*` figures read now.
pub fn render(status: &Status, stats: &StatsReport) -> String {
    render_with(status, stats, &ProcessStats::read(), EXPORTER_SERIES_MAX)
}

/// The whole /metrics page, at most `exporter_series` exporters with series of their own.
pub fn render_with(
    status: &Status,
    stats: &StatsReport,
    process: &ProcessStats,
    exporter_series: usize,
) -> String {
    let mut w = Writer::new();
    let version = status.version.as_str();
    let backends = built_backends();
    w.gauge(
        "goflow_build_info",
        "Always 1: which goflow runs (version, commit, the backends built in, the receiver in \
         use).",
        &[(
            &[
                ("version", version),
                ("commit", COMMIT),
                ("backends", &backends),
                ("receiver", receiver_kind(&status.receiver.kind)),
            ],
            1,
        )],
    );
    w.counter_f64(
        "process_cpu_seconds_total",
        "User and system CPU time of the process, in seconds.",
        &[(&[], process.cpu_seconds)],
    );
    w.gauge(
        "process_resident_memory_bytes",
        "Resident memory of the process, in bytes.",
        &[(&[], process.resident_bytes)],
    );
    w.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory of the process, in bytes.",
        &[(&[], process.virtual_bytes)],
    );
    w.gauge(
        "process_open_fds",
        "Open file descriptors of the process (sockets included).",
        &[(&[], process.open_fds)],
    );
    w.gauge(
        "process_max_fds",
        "The process's limit on open file descriptors (RLIMIT_NOFILE, soft).",
        &[(&[], process.max_fds)],
    );
    w.gauge(
        "process_start_time_seconds",
        "Unix time at which the process started, in seconds.",
        &[(&[], status.started_unix_secs)],
    );
    w.gauge(
        "goflow_process_uptime_seconds",
        "Time since the daemon started, in seconds.",
        &[(&[], status.uptime_secs)],
    );
    w.gauge(
        "goflow_process_start_time_seconds",
        "Unix time at which the daemon started, in seconds (as process_start_time_seconds).",
        &[(&[], status.started_unix_secs)],
    );

    let r = &status.receiver;
    w.gauge(
        "goflow_receiver_workers",
        "Receive workers: configured (state=configured) and running (state=running).",
        &[
            (
                &[("kind", receiver_kind(&r.kind)), ("state", "configured")],
                r.workers as u64,
            ),
            (
                &[("kind", receiver_kind(&r.kind)), ("state", "running")],
                r.running as u64,
            ),
        ],
    );
    let t = &status.totals;
    w.counter(
        "goflow_receiver_datagrams_total",
        "Datagrams received.",
        &[(&[], t.datagrams)],
    );
    w.counter(
        "goflow_receiver_bytes_total",
        "Bytes of datagrams received.",
        &[(&[], t.bytes)],
    );
    let datagram_drops: Vec<(Vec<(&str, &str)>, u64)> = t
        .drops
        .datagram_reasons()
        .iter()
        .map(|(k, v)| (vec![("reason", *k)], *v))
        .collect();
    let samples: Vec<(Labels<'_>, u64)> = datagram_drops
        .iter()
        .map(|(l, v)| (l.as_slice(), *v))
        .collect();
    w.counter(
        "goflow_receiver_dropped_datagrams_total",
        "Datagrams lost, by reason: kernel (socket buffer overflow), truncated (larger than the \
         receive buffer), decode_* (rejected by the decoder).",
        &samples,
    );
    w.counter(
        "goflow_pipeline_batches_total",
        "Batches decoded and encoded.",
        &[(&[], t.batches)],
    );
    w.counter(
        "goflow_decoder_records_total",
        "Flow records decoded.",
        &[(&[], t.records)],
    );
    let record_drops: Vec<(Vec<(&str, &str)>, u64)> = t
        .drops
        .record_reasons()
        .iter()
        .map(|(k, v)| (vec![("reason", *k)], *v))
        .collect();
    let samples: Vec<(Labels<'_>, u64)> = record_drops
        .iter()
        .map(|(l, v)| (l.as_slice(), *v))
        .collect();
    w.counter(
        "goflow_pipeline_dropped_records_total",
        "Flow records lost, by reason: truncated_record (a data set ending in part of a \
         record, or a variable-length record overrunning its set), backend (rows that could not \
         be queued or stored). Data sets without a known template are counted in sets: \
         goflow_decoder_no_template_sets_total.",
        &samples,
    );
    w.counter(
        "goflow_decoder_sequence_missing_total",
        "Units exporters numbered but goflow never received (v5 flows, v9 packets, IPFIX records).",
        &[(&[], t.sequence_missing)],
    );
    let st = &t.state;
    w.gauge(
        "goflow_decoder_exporters",
        "Exporters with per-exporter state now (forgotten after their idle time).",
        &[(&[], st.exporters)],
    );
    w.gauge(
        "goflow_decoder_exporters_max",
        "The bound on exporters with per-exporter state (limits.exporters times workers).",
        &[(&[], st.exporters_max)],
    );
    w.counter(
        "goflow_decoder_untracked_datagrams_total",
        "Datagrams of exporters beyond the exporter bound (decoded, but no per-exporter state).",
        &[(&[], st.exporters_untracked_datagrams)],
    );
    w.counter(
        "goflow_decoder_exporters_expired_total",
        "Exporters forgotten after limits.exporter_idle seconds without a datagram.",
        &[(&[], st.exporters_expired)],
    );
    w.gauge(
        "goflow_decoder_sequence_streams",
        "Sequence streams (exporter, domain, version) followed now.",
        &[(&[], st.sequence_streams)],
    );
    w.gauge(
        "goflow_decoder_templates_max",
        "The bound on templates held (limits.templates times workers).",
        &[(&[], st.templates_max)],
    );
    w.counter(
        "goflow_decoder_templates_rejected_total",
        "Template records refused, by reason: malformed (no fields, too many, zero-length \
         records, ids below 256, bad scope counts), exporter_full (over \
         limits.templates_per_exporter), cache_full (no room could be made).",
        &[
            (&[("reason", "malformed")], st.templates_refused_malformed),
            (
                &[("reason", "exporter_full")],
                st.templates_refused_exporter_full,
            ),
            (&[("reason", "cache_full")], st.templates_refused_cache_full),
        ],
    );
    w.counter(
        "goflow_decoder_templates_evicted_total",
        "Templates evicted to admit new ones (those no data set used lately go first).",
        &[(&[], st.templates_evicted)],
    );
    w.counter(
        "goflow_decoder_no_template_sets_total",
        "Data sets skipped because their template is not known, in sets (without the \
         template a set's record count is unknown).",
        &[(&[], t.drops.no_template)],
    );
    w.counter(
        "goflow_decoder_no_template_bytes_total",
        "Bytes of data sets skipped because their template is not known.",
        &[(&[], t.drops.no_template_bytes)],
    );
    w.gauge(
        "goflow_decoder_templates",
        "Templates held across all workers.",
        &[(&[], t.templates)],
    );
    w.gauge(
        "goflow_decoder_templates_restored",
        "Templates loaded from state_dir at start and not announced again since.",
        &[(&[], t.templates_restored)],
    );
    w.gauge(
        "goflow_decoder_held_bytes",
        "Bytes of data sets held for a template not yet known.",
        &[(&[], t.held.bytes)],
    );
    w.counter(
        "goflow_decoder_held_released_records_total",
        "Records of held data sets decoded once their template arrived.",
        &[(&[], t.held.released_records)],
    );
    w.counter(
        "goflow_decoder_held_expired_sets_total",
        "Held data sets dropped unheld (by age, or to make room).",
        &[(&[], t.held.expired_sets + t.held.dropped_sets)],
    );
    w.counter(
        "goflow_decoder_nsel_adjusted_records_total",
        "NSEL records stored with teardown totals less what flow updates already carried.",
        &[(&[], t.nsel.adjusted_records)],
    );
    w.counter(
        "goflow_decoder_nsel_connections_evicted_total",
        "Open NSEL connections forgotten to make room (limits.nsel_connections).",
        &[(&[], t.nsel.connections_evicted)],
    );
    w.counter(
        "goflow_decoder_nsel_connections_expired_total",
        "NSEL connections forgotten for age (idle 2 h, or torn down 2 min ago).",
        &[(&[], t.nsel.connections_expired)],
    );

    // Backends: the label values are the configured names and types (a closed set).
    let b = &status.backends;
    let labels: Vec<[(&str, &str); 2]> = b
        .iter()
        .map(|b| [("backend", b.name.as_str()), ("type", b.kind.as_str())])
        .collect();
    let per = |f: &dyn Fn(&super::status::BackendStatus) -> u64| -> Vec<(Labels<'_>, u64)> {
        b.iter().zip(&labels).map(|(b, l)| (&l[..], f(b))).collect()
    };
    w.gauge(
        "goflow_backend_healthy",
        "1 when the backend is healthy, else 0.",
        &per(&|b| u64::from(b.healthy)),
    );
    w.counter(
        "goflow_backend_rows_written_total",
        "Rows the backend made durable.",
        &per(&|b| b.rows_written),
    );
    w.counter(
        "goflow_backend_rows_dropped_total",
        "Rows the backend could not queue or store.",
        &per(&|b| b.rows_dropped),
    );
    w.gauge(
        "goflow_backend_queued_bytes",
        "Encoded bytes waiting in the backend's queue.",
        &per(&|b| b.queued_bytes),
    );
    w.counter(
        "goflow_backend_flushes_total",
        "Flushes that made rows durable.",
        &per(&|b| b.flushes),
    );
    w.gauge(
        "goflow_backend_flushes_in_flight",
        "Flushes handed to the backend and not yet acknowledged.",
        &per(&|b| b.flushes_in_flight),
    );
    w.counter(
        "goflow_backend_errors_total",
        "Errors writing to the backend.",
        &per(&|b| b.errors),
    );
    w.counter(
        "goflow_backend_reconnects_total",
        "Reconnections to the backend.",
        &per(&|b| b.reconnects),
    );
    // Spools (backends without one have no series).
    let sp = |f: &dyn Fn(&super::status::SpoolStatus) -> u64| -> Vec<(Labels<'_>, u64)> {
        b.iter()
            .zip(&labels)
            .filter_map(|(b, l)| b.spool.as_ref().map(|s| (&l[..], f(s))))
            .collect()
    };
    w.gauge(
        "goflow_spool_bytes",
        "Bytes of the backend's spool segments on disk.",
        &sp(&|s| s.bytes),
    );
    w.gauge(
        "goflow_spool_segments",
        "Segment files in the backend's spool.",
        &sp(&|s| s.segments),
    );
    w.counter(
        "goflow_spool_rows_spooled_total",
        "Rows written to the spool because the backend could not take them.",
        &sp(&|s| s.rows_spooled),
    );
    w.counter(
        "goflow_spool_rows_replayed_total",
        "Spooled rows replayed and stored by the backend.",
        &sp(&|s| s.rows_replayed),
    );
    w.counter(
        "goflow_spool_rows_dropped_total",
        "Rows the spool refused (full: the newest are refused) or could not write.",
        &sp(&|s| s.rows_dropped),
    );
    w.counter(
        "goflow_spool_damaged_bytes_total",
        "Damaged spool bytes (torn or corrupt records) skipped while replaying.",
        &sp(&|s| s.damaged_bytes),
    );
    w.gauge(
        "goflow_spool_oldest_age_seconds",
        "Age of the oldest spooled row not yet stored (0 = none).",
        &sp(&|s| s.oldest_age_secs),
    );
    kafka_families(&mut w, b);
    if let Some(k) = &status.kafka {
        kafka_metrics(&mut w, k);
    }
    let last_flush: Vec<(Labels<'_>, f64)> = b
        .iter()
        .zip(&labels)
        .filter_map(|(b, l)| b.last_flush_unix_us.map(|t| (&l[..], t as f64 / US_PER_S)))
        .collect();
    w.gauge_f64(
        "goflow_backend_last_flush_timestamp_seconds",
        "Unix time of the backend's last successful flush.",
        &last_flush,
    );

    exporter_series_into(&mut w, status, exporter_series);

    // Histograms, since start: Prometheus histograms (aggregatable across instances) at fixed
    // bounds; /stats keeps the exact percentiles.
    fn find<'s>(
        stats: &'s StatsReport,
        name: &'s str,
    ) -> impl Iterator<Item = &'s HistogramReport> {
        stats.histograms.iter().filter(move |h| h.name == name)
    }
    let one = |name: &str| {
        find(stats, name)
            .next()
            .map(|h| h.since_start.clone())
            .unwrap_or_default()
    };
    let per_backend = |name: &str| -> Vec<(String, Summary)> {
        find(stats, name)
            .map(|h| (h.backend.clone().unwrap_or_default(), h.since_start.clone()))
            .collect()
    };
    let batch = one("batch_time_us");
    w.histogram_of(
        "goflow_pipeline_batch_duration_seconds",
        "Decode and encode time of one batch of datagrams, in seconds.",
        &[(&[], &batch)],
        US_PER_S,
    );
    for (name, key, help) in [
        (
            "goflow_backend_commit_age_seconds",
            "commit_age_us",
            "Age of a row when the flush that made it durable committed (receive -> durable), \
             in seconds; one observation per row.",
        ),
        (
            "goflow_backend_flush_duration_seconds",
            "flush_time_us",
            "Duration of one backend flush, in seconds.",
        ),
    ] {
        let list = per_backend(key);
        let labels: Vec<[(&str, &str); 1]> = list
            .iter()
            .map(|(n, _)| [("backend", n.as_str())])
            .collect();
        let samples: Vec<(Labels<'_>, &Summary)> = list
            .iter()
            .zip(&labels)
            .map(|((_, s), l)| (&l[..], s))
            .collect();
        w.histogram_of(name, help, &samples, US_PER_S);
    }
    let dpb = one("batch_datagrams");
    w.histogram_of(
        "goflow_pipeline_batch_datagrams",
        "Datagrams per batch (one receive wake-up), in datagrams.",
        &[(&[], &dpb)],
        1.0,
    );
    let rpd = one("datagram_records");
    w.histogram_of(
        "goflow_decoder_datagram_records",
        "Flow records per datagram, in records.",
        &[(&[], &rpd)],
        1.0,
    );
    w.finish()
}

/// Kafka backends' producers (backends of other types have no series).
fn kafka_families(w: &mut Writer, backends: &[super::status::BackendStatus]) {
    let kafka: Vec<(&str, &super::status::KafkaStatus)> = backends
        .iter()
        .filter_map(|b| b.kafka.as_ref().map(|k| (b.name.as_str(), k)))
        .collect();
    let labels: Vec<[(&str, &str); 1]> = kafka.iter().map(|(n, _)| [("backend", *n)]).collect();
    let per = |f: &dyn Fn(&super::status::KafkaStatus) -> u64| -> Vec<(Labels<'_>, u64)> {
        kafka
            .iter()
            .zip(&labels)
            .map(|((_, k), l)| (&l[..], f(k)))
            .collect()
    };
    w.counter(
        "goflow_kafka_messages_total",
        "Kafka messages the brokers acknowledged.",
        &per(&|k| k.messages),
    );
    w.counter(
        "goflow_kafka_flows_total",
        "Flows in Kafka messages the brokers acknowledged.",
        &per(&|k| k.flows),
    );
    w.counter(
        "goflow_kafka_bytes_total",
        "Message-value bytes (before compression) the brokers acknowledged.",
        &per(&|k| k.bytes),
    );
    w.counter(
        "goflow_kafka_messages_sent_total",
        "Kafka messages handed to the producer.",
        &per(&|k| k.messages_sent),
    );
    w.gauge(
        "goflow_kafka_in_flight_messages",
        "Kafka messages handed to the producer without a delivery report yet.",
        &per(&|k| k.in_flight),
    );
    w.gauge(
        "goflow_kafka_connected",
        "1 when the last metadata request reached a broker, else 0.",
        &per(&|k| u64::from(k.connected)),
    );
    w.counter(
        "goflow_kafka_producer_restarts_total",
        "Kafka producers replaced after a fatal error left the previous one unusable.",
        &per(&|k| k.producer_restarts),
    );
    let reasons: Vec<[(&str, &str); 2]> = kafka
        .iter()
        .flat_map(|(n, k)| {
            k.delivery_errors_by_reason
                .keys()
                .map(move |r| [("backend", *n), ("reason", r.as_str())])
        })
        .collect();
    let counts: Vec<u64> = kafka
        .iter()
        .flat_map(|(_, k)| k.delivery_errors_by_reason.values().copied())
        .collect();
    let samples: Vec<(Labels<'_>, u64)> = reasons
        .iter()
        .zip(counts)
        .map(|(l, n)| (&l[..], n))
        .collect();
    w.counter(
        "goflow_kafka_delivery_errors_total",
        "Kafka deliveries that failed after the producer's retries, by reason (each went back \
         to the backend's retry or spool).",
        &samples,
    );
    let hist: Vec<HistogramSample<'_>> = kafka
        .iter()
        .zip(&labels)
        .map(|((_, k), l)| {
            let raw = &k.ack_latency_buckets_us;
            let mut cumulative = 0;
            let mut buckets = Vec::new();
            // The last raw bucket is everything longer: it is the +Inf bucket.
            for (i, n) in raw.iter().enumerate().take(raw.len().saturating_sub(1)) {
                cumulative += n;
                if i >= KAFKA_ACK_FIRST_BUCKET {
                    buckets.push(((1u64 << i) as f64 / US_PER_S, cumulative));
                }
            }
            HistogramSample {
                labels: &l[..],
                buckets,
                sum: k.ack_latency_us.sum as f64 / US_PER_S,
                count: raw.iter().sum(),
            }
        })
        .collect();
    w.histogram(
        "goflow_kafka_ack_latency_seconds",
        "Time from handing a Kafka message to the producer to the brokers' acknowledgement.",
        &hist,
    );
}

/// Per-exporter series: the `limit` exporters that sent the most flow records have their
/// own (`exporter="ADDR"`); all others (and any that sent no valid record) are summed under
/// `exporter="other"`.
fn exporter_series_into(w: &mut Writer, status: &Status, limit: usize) {
    use super::status::ExporterStatus;
    let mut ranked: Vec<&ExporterStatus> =
        status.exporters.iter().filter(|e| e.records > 0).collect();
    ranked.sort_by(|a, b| b.records.cmp(&a.records).then(a.address.cmp(&b.address)));
    ranked.truncate(limit);
    let mut own: Vec<&ExporterStatus> = ranked;
    own.sort_by(|a, b| a.address.cmp(&b.address));
    let folded: Vec<&ExporterStatus> = status
        .exporters
        .iter()
        .filter(|e| !own.iter().any(|o| std::ptr::eq(*o, *e)))
        .collect();
    let other = folded.iter().fold(ExporterStatus::default(), |mut acc, e| {
        acc.datagrams += e.datagrams;
        acc.records += e.records;
        acc.bytes += e.bytes;
        acc.no_template_sets += e.no_template_sets;
        acc.errors += e.errors;
        acc.sequence_missing += e.sequence_missing;
        acc.templates += e.templates;
        acc
    });
    w.gauge(
        "goflow_exporter_series_max",
        "The most exporters with series of their own here (the others are summed under \
         exporter=\"other\").",
        &[(&[], limit as u64)],
    );
    w.gauge(
        "goflow_exporter_series_folded",
        "Exporters summed under exporter=\"other\" now (beyond the bound, or no valid record \
         yet).",
        &[(&[], folded.len() as u64)],
    );
    let labels: Vec<[(&str, &str); 1]> = own
        .iter()
        .map(|e| [("exporter", e.address.as_str())])
        .collect();
    let with_other = |f: &dyn Fn(&ExporterStatus) -> u64| -> Vec<(Labels<'_>, u64)> {
        let mut v: Vec<(Labels<'_>, u64)> = own
            .iter()
            .zip(&labels)
            .map(|(e, l)| (&l[..], f(e)))
            .collect();
        if !folded.is_empty() {
            v.push((&[("exporter", OTHER_EXPORTER)], f(&other)));
        }
        v
    };
    w.counter(
        "goflow_exporter_datagrams_total",
        "Datagrams received from the exporter, in datagrams.",
        &with_other(&|e| e.datagrams),
    );
    w.counter(
        "goflow_exporter_records_total",
        "Flow records decoded from the exporter's datagrams, in records.",
        &with_other(&|e| e.records),
    );
    w.counter(
        "goflow_exporter_bytes_total",
        "Bytes of the exporter's datagrams (UDP payload), in bytes.",
        &with_other(&|e| e.bytes),
    );
    w.counter(
        "goflow_exporter_no_template_sets_total",
        "The exporter's data sets skipped because their template was not known, in data sets.",
        &with_other(&|e| e.no_template_sets),
    );
    w.counter(
        "goflow_exporter_decode_errors_total",
        "The exporter's datagrams rejected by the decoder, in datagrams.",
        &with_other(&|e| e.errors),
    );
    w.gauge(
        "goflow_exporter_sequence_missing",
        "Units the exporter numbered but goflow never received, by its protocol's unit (v5: \
         flows, v9: export packets, IPFIX: data records); falls when a late datagram fills a \
         gap.",
        &with_other(&|e| e.sequence_missing),
    );
    w.gauge(
        "goflow_exporter_templates",
        "Templates held for the exporter, in templates.",
        &with_other(&|e| e.templates),
    );
    let own_only = |f: &dyn Fn(&ExporterStatus) -> Option<f64>| -> Vec<(Labels<'_>, f64)> {
        own.iter()
            .zip(&labels)
            .filter_map(|(e, l)| f(e).map(|v| (&l[..], v)))
            .collect()
    };
    w.gauge_f64(
        "goflow_exporter_last_seen_timestamp_seconds",
        "Unix time of the exporter's last datagram, in seconds (alert on time() minus this).",
        &own_only(&|e| e.last_seen_unix_us.map(|t| t as f64 / US_PER_S)),
    );
    w.gauge_f64(
        "goflow_exporter_sampling_rate",
        "The sampling in force for the exporter's latest records: 1 in N packets (0: unknown).",
        &own_only(&|e| Some(f64::from(e.sampling_rate))),
    );
}

/// The receiver kind as a label value from the closed set.
/// The Kafka frontend: its counters, and lag per assigned partition (the topics are the
/// configured ones, the partitions the group assigned: a closed set).
fn kafka_metrics(w: &mut Writer, k: &super::status::KafkaFrontendStatus) {
    w.counter(
        "goflow_kafka_consumer_messages_total",
        "Kafka messages the frontend read (bad ones included).",
        &[(&[], k.messages)],
    );
    w.counter(
        "goflow_kafka_consumer_flows_total",
        "Flows decoded from Kafka messages.",
        &[(&[], k.flows)],
    );
    w.counter(
        "goflow_kafka_consumer_rows_stored_total",
        "Rows the backends stored from the Kafka frontend (all backends together).",
        &[(&[], k.rows_stored)],
    );
    w.counter(
        "goflow_kafka_consumer_rows_cancelled_total",
        "Rows forgotten because their partition was revoked before they were stored.",
        &[(&[], k.rows_cancelled)],
    );
    let bad: Vec<(Vec<(&str, &str)>, u64)> = k
        .bad_messages
        .iter()
        .map(|(r, n)| (vec![("reason", r.as_str())], *n))
        .collect();
    let bad: Vec<(Labels<'_>, u64)> = bad.iter().map(|(l, n)| (&l[..], *n)).collect();
    w.counter(
        "goflow_kafka_consumer_bad_messages_total",
        "Kafka messages skipped because they could not be decoded, by reason.",
        &bad,
    );
    w.counter(
        "goflow_kafka_consumer_rebalances_total",
        "Consumer group rebalances (assignments and revocations).",
        &[(&[], k.rebalances)],
    );
    w.gauge(
        "goflow_kafka_consumer_assigned_partitions",
        "Partitions assigned to this consumer.",
        &[(&[], k.partitions.len() as u64)],
    );
    w.gauge(
        "goflow_kafka_consumer_paused",
        "1 while reading is paused because the backends hold as much as they may.",
        &[(&[], u64::from(k.paused))],
    );
    let parts: Vec<(String, &str, u64)> = k
        .partitions
        .iter()
        .filter(|p| p.lag >= 0)
        .map(|p| (p.partition.to_string(), p.topic.as_str(), p.lag as u64))
        .collect();
    let labels: Vec<[(&str, &str); 2]> = parts
        .iter()
        .map(|(p, t, _)| [("topic", *t), ("partition", p.as_str())])
        .collect();
    let lag: Vec<(Labels<'_>, u64)> = labels
        .iter()
        .zip(&parts)
        .map(|(l, p)| (&l[..], p.2))
        .collect();
    w.gauge(
        "goflow_kafka_consumer_lag",
        "Messages of the partition produced and not stored yet (high watermark - stored offset).",
        &lag,
    );
}

fn receiver_kind(kind: &str) -> &'static str {
    match kind {
        "uring" => "uring",
        "mmsg" => "mmsg",
        _ => "unknown",
    }
}

/// One sample read back by [`parse`].
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads exposition text strictly: every line a HELP, TYPE or sample; names and label names
/// valid; every sample in a family whose TYPE came before it and whose samples are contiguous;
/// counters end in `_total`; summaries carry `_sum` and `_count`; no duplicate series.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let ln = n + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kw = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            let arg = parts.next().unwrap_or("");
            match kw {
                "HELP" | "TYPE" => {
                    if !valid_name(name) {
                        return Err(format!("line {ln}: bad metric name {name:?}"));
                    }
                    if current.as_deref() != Some(name) {
                        if let Some(c) = current.take() {
                            closed.insert(c);
                        }
                        if closed.contains(name) {
                            return Err(format!("line {ln}: family {name} split"));
                        }
                        current = Some(name.to_owned());
                    }
                    if kw == "TYPE" {
                        if !matches!(
                            arg,
                            "counter" | "gauge" | "summary" | "histogram" | "untyped"
                        ) {
                            return Err(format!("line {ln}: bad type {arg:?}"));
                        }
                        if arg == "counter" && !name.ends_with("_total") {
                            return Err(format!("line {ln}: counter {name} lacks _total"));
                        }
                        if types.insert(name.to_owned(), arg.to_owned()).is_some() {
                            return Err(format!("line {ln}: second TYPE for {name}"));
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let s = parse_sample(line).map_err(|e| format!("line {ln}: {e}: {line:?}"))?;
        let family = family_of(&s.name, &types);
        let Some(kind) = types.get(&family) else {
            return Err(format!("line {ln}: sample {} without TYPE", s.name));
        };
        if current.as_deref() != Some(family.as_str()) {
            return Err(format!("line {ln}: sample {} outside its family", s.name));
        }
        if kind == "counter" && (s.value < 0.0 || s.value.is_nan()) {
            return Err(format!("line {ln}: counter {} is {}", s.name, s.value));
        }
        let key = format!("{}{:?}", s.name, s.labels);
        if !series.insert(key) {
            return Err(format!("line {ln}: duplicate series {}", s.name));
        }
        samples.push(s);
    }
    for (name, kind) in &types {
        if kind == "histogram" {
            let base = samples.iter().any(|s| s.name == *name);
            let inf = samples
                .iter()
                .any(|s| s.name == format!("{name}_bucket") && s.label("le") == Some("+Inf"));
            let any = samples.iter().any(|s| s.name.starts_with(name.as_str()));
            if base || (any && !inf) {
                return Err(format!(
                    "histogram {name} lacks le=\"+Inf\" or has a bare sample"
                ));
            }
        }
        if kind == "summary" {
            let has = |suffix: &str| {
                let want = format!("{name}{suffix}");
                samples.iter().any(|s| s.name == want)
            };
            let any = samples.iter().any(|s| s.name.starts_with(name.as_str()));
            if any && !(has("_sum") && has("_count")) {
                return Err(format!("summary {name} lacks _sum or _count"));
            }
        }
    }
    Ok(samples)
}

/// The family a sample belongs to (`x_sum` / `x_count` / `x_bucket` belong to summary or
/// histogram `x`).
fn family_of(name: &str, types: &HashMap<String, String>) -> String {
    for suffix in ["_sum", "_count", "_bucket"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(
                types.get(base).map(String::as_str),
                Some("summary" | "histogram")
            )
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or_else(|| "no value".to_owned())?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let key = &rest[..eq];
            if !valid_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".to_owned()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        _ => return Err("bad escape in label value".to_owned()),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            if labels.iter().any(|(k, _): &(String, String)| k == key) {
                return Err(format!("label {key} twice"));
            }
            labels.push((key.to_owned(), value));
            rest = &rest[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before value")?;
    let mut fields = rest.split(' ');
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return Err(format!("bad timestamp {ts:?}"));
    }
    if fields.next().is_some() {
        return Err("trailing fields".to_owned());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::histogram::{HistogramReport, Summary};
    use crate::ops::status::{BackendStatus, Drops, ReceiverStatus, Totals};

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            uptime_secs: 5,
            started_unix_secs: 1_800_000_000,
            receiver: ReceiverStatus {
                kind: "mmsg".into(),
                bind: "127.0.0.1:2055".into(),
                workers: 2,
                running: 2,
                ..ReceiverStatus::default()
            },
            backends: vec![BackendStatus {
                name: "out \"a\"\\b".into(),
                kind: "file".into(),
                healthy: true,
                rows_written: 60,
                last_flush_unix_us: Some(1_800_000_000_500_000),
                ..BackendStatus::default()
            }],
            totals: Totals {
                datagrams: 2,
                bytes: 2928,
                records: 60,
                drops: Drops {
                    kernel: 3,
                    no_template: 4,
                    ..Drops::default()
                },
                ..Totals::default()
            },
            ..Status::default()
        }
    }

    fn stats() -> StatsReport {
        let s = Summary {
            count: 4,
            sum: 1000,
            p50: 200,
            p90: 300,
            p99: 400,
            p999: 400,
            max: 400,
            cumulative: [(100, 0), (250, 2), (500, 4)]
                .iter()
                .map(|&(le, count)| crate::ops::histogram::Bucket { le, count })
                .collect(),
            ..Summary::default()
        };
        StatsReport {
            histograms: vec![
                HistogramReport {
                    name: "batch_time_us".into(),
                    since_start: s.clone(),
                    ..HistogramReport::default()
                },
                HistogramReport {
                    name: "flush_time_us".into(),
                    backend: Some("out \"a\"\\b".into()),
                    ..HistogramReport::default()
                },
            ],
            ..StatsReport::default()
        }
    }

    #[test]
    fn kafka_frontend_lag_per_partition() -> Result<(), String> {
        use crate::ops::status::{KafkaFrontendStatus, KafkaPartitionStatus};
        let mut st = status();
        st.kafka = Some(KafkaFrontendStatus {
            messages: 10,
            bad_messages: [("malformed".to_owned(), 2), ("empty".to_owned(), 0)].into(),
            partitions: vec![
                KafkaPartitionStatus {
                    topic: "flows".into(),
                    partition: 0,
                    lag: 7,
                    ..KafkaPartitionStatus::default()
                },
                KafkaPartitionStatus {
                    topic: "flows".into(),
                    partition: 1,
                    lag: -1,
                    ..KafkaPartitionStatus::default()
                },
            ],
            ..KafkaFrontendStatus::default()
        });
        let samples = parse(&render(&st, &stats()))?;
        let get = |name: &str, label: (&str, &str)| {
            samples
                .iter()
                .find(|s| s.name == name && s.label(label.0) == Some(label.1))
                .map(|s| s.value)
        };
        assert_eq!(
            get("goflow_kafka_consumer_lag", ("partition", "0")),
            Some(7.0)
        );
        assert_eq!(get("goflow_kafka_consumer_lag", ("partition", "1")), None);
        assert_eq!(
            get(
                "goflow_kafka_consumer_bad_messages_total",
                ("reason", "malformed")
            ),
            Some(2.0)
        );
        assert!(
            samples
                .iter()
                .any(|s| s.name == "goflow_kafka_consumer_assigned_partitions" && s.value == 2.0)
        );
        Ok(())
    }

    #[test]
    fn rendered_page_parses_and_carries_the_figures() -> Result<(), String> {
        let text = render(&status(), &stats());
        let samples = parse(&text)?;
        let get = |name: &str, label: Option<(&str, &str)>| {
            samples
                .iter()
                .find(|s| s.name == name && label.is_none_or(|(k, v)| s.label(k) == Some(v)))
                .map(|s| s.value)
        };
        assert_eq!(get("goflow_receiver_datagrams_total", None), Some(2.0));
        assert_eq!(get("goflow_decoder_records_total", None), Some(60.0));
        assert_eq!(
            get(
                "goflow_receiver_dropped_datagrams_total",
                Some(("reason", "kernel"))
            ),
            Some(3.0)
        );
        // Data sets without a template are counted in sets, not as records (issue 13).
        assert_eq!(
            get(
                "goflow_pipeline_dropped_records_total",
                Some(("reason", "no_template"))
            ),
            None
        );
        assert_eq!(
            get("goflow_decoder_no_template_sets_total", None),
            Some(4.0)
        );
        assert_eq!(
            get(
                "goflow_backend_rows_written_total",
                Some(("backend", "out \"a\"\\b"))
            ),
            Some(60.0)
        );
        assert_eq!(
            get("goflow_backend_last_flush_timestamp_seconds", None),
            Some(1_800_000_000.5)
        );
        // Histograms: cumulative buckets at the fixed bounds, +Inf = count.
        assert_eq!(
            get(
                "goflow_pipeline_batch_duration_seconds_bucket",
                Some(("le", "0.00025"))
            ),
            Some(2.0)
        );
        assert_eq!(
            get(
                "goflow_pipeline_batch_duration_seconds_bucket",
                Some(("le", "+Inf"))
            ),
            Some(4.0)
        );
        assert_eq!(
            get("goflow_pipeline_batch_duration_seconds_sum", None),
            Some(0.001)
        );
        assert_eq!(
            get("goflow_pipeline_batch_duration_seconds_count", None),
            Some(4.0)
        );
        // An empty histogram: zero buckets, zero count, per backend.
        assert_eq!(
            get(
                "goflow_backend_flush_duration_seconds_bucket",
                Some(("le", "+Inf"))
            ),
            Some(0.0)
        );
        assert_eq!(
            get("goflow_backend_flush_duration_seconds_count", None),
            Some(0.0)
        );
        // Build info and process figures.
        let info = samples.iter().find(|s| s.name == "goflow_build_info");
        assert_eq!(info.and_then(|s| s.label("receiver")), Some("mmsg"));
        assert_eq!(info.and_then(|s| s.label("commit")), Some(COMMIT));
        assert!(
            info.and_then(|s| s.label("backends"))
                .is_some_and(|b| b.contains("postgres"))
        );
        assert!(get("process_resident_memory_bytes", None).is_some_and(|v| v > 0.0));
        assert!(get("process_open_fds", None).is_some_and(|v| v >= 3.0));
        assert!(get("process_cpu_seconds_total", None).is_some_and(|v| v > 0.0));
        assert_eq!(
            get("process_start_time_seconds", None),
            Some(1_800_000_000.0)
        );
        // Every family has HELP and TYPE before its samples.
        for s in &samples {
            let family = s
                .name
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
                .trim_end_matches("_bucket");
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
        Ok(())
    }

    /// `promtool check metrics` (apt prometheus) on a rendered page; skipped without promtool.
    #[test]
    fn promtool_accepts_the_page() -> Result<(), String> {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("promtool not installed (apt-get install prometheus): skipping");
            return Ok(());
        };
        let text = render(&status(), &stats());
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool: {said}\n{text}"
        );
        Ok(())
    }

    #[test]
    fn exporters_beyond_the_bound_fold_into_other() -> Result<(), String> {
        use crate::ops::status::ExporterStatus;
        let mut st = status();
        let e = |addr: &str, records: u64| ExporterStatus {
            address: addr.into(),
            datagrams: 1 + records / 30,
            records,
            bytes: 100 * records,
            errors: u64::from(records == 0),
            sampling_rate: 64,
            last_seen_unix_us: Some(1_800_000_000_000_000),
            templates: 2,
            ..ExporterStatus::default()
        };
        // Two real routers, three spoofed one-record sources, one that only sent garbage.
        st.exporters = vec![
            e("10.0.0.1", 9000),
            e("10.0.0.2", 6000),
            e("127.1.0.1", 1),
            e("127.1.0.2", 1),
            e("127.1.0.3", 1),
            e("127.1.0.4", 0),
        ];
        let text = render_with(&st, &stats(), &ProcessStats::default(), 3);
        let samples = parse(&text)?;
        let series = |name: &str| -> Vec<(String, f64)> {
            samples
                .iter()
                .filter(|s| s.name == name)
                .map(|s| (s.label("exporter").unwrap_or("").to_owned(), s.value))
                .collect()
        };
        assert_eq!(
            series("goflow_exporter_records_total"),
            [
                ("10.0.0.1".to_owned(), 9000.0),
                ("10.0.0.2".to_owned(), 6000.0),
                ("127.1.0.1".to_owned(), 1.0),
                ("other".to_owned(), 2.0)
            ]
        );
        assert_eq!(
            series("goflow_exporter_decode_errors_total")[3],
            ("other".to_owned(), 1.0)
        );
        assert_eq!(
            series("goflow_exporter_templates")[3],
            ("other".to_owned(), 6.0)
        );
        assert_eq!(
            series("goflow_exporter_sampling_rate").len(),
            3,
            "none for other"
        );
        assert_eq!(
            series("goflow_exporter_series_folded"),
            [(String::new(), 3.0)]
        );
        assert_eq!(series("goflow_exporter_series_max"), [(String::new(), 3.0)]);
        // Within the bound: only the exporter without a valid record is folded.
        let text = render_with(&st, &stats(), &ProcessStats::default(), 100);
        let samples = parse(&text)?;
        let errors: Vec<(String, f64)> = samples
            .iter()
            .filter(|s| s.name == "goflow_exporter_decode_errors_total")
            .map(|s| (s.label("exporter").unwrap_or("").to_owned(), s.value))
            .collect();
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert_eq!(errors[5], ("other".to_owned(), 1.0));
        Ok(())
    }

    #[test]
    fn labels_are_escaped() {
        let mut w = Writer::new();
        w.gauge("x_y", "a \\ help\nline", &[(&[("l", "a\"b\\c\nd")], 1)]);
        let text = w.finish();
        assert_eq!(
            text,
            "# HELP x_y a \\\\ help\\nline\n# TYPE x_y gauge\nx_y{l=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
        let s = parse(&text).unwrap_or_default();
        assert_eq!(s.first().and_then(|s| s.label("l")), Some("a\"b\\c\nd"));
    }

    #[test]
    fn parser_rejects_what_prometheus_rejects() {
        for bad in [
            "x_total 1\n",                                           // no TYPE
            "# TYPE x counter\nx 1\n",                               // counter without _total
            "# TYPE x_total counter\nx_total{a=b} 1\n",              // unquoted label
            "# TYPE x_total counter\nx_total one\n",                 // bad value
            "# TYPE x_total counter\nx_total 1\nx_total 2\n",        // duplicate series
            "# TYPE x_total counter\nx_total -1\n",                  // negative counter
            "# TYPE 1x gauge\n",                                     // bad name
            "# TYPE s summary\ns{quantile=\"0.5\"} 1\n",             // summary without _sum
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n",            // histogram without +Inf
            "# TYPE a gauge\n# TYPE b gauge\na 1\n",                 // sample outside family
            "# TYPE a gauge\na 1\n# TYPE b gauge\n# HELP a again\n", // split family
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(parse("# TYPE a gauge\na{b=\"c\",d=\"e\"} 1.5 1700000000000\n").is_ok());
    }

    #[test]
    fn floats_are_spelled_for_prometheus() {
        assert_eq!(format_f64(f64::NAN), "NaN");
        assert_eq!(format_f64(f64::INFINITY), "+Inf");
        assert_eq!(format_f64(0.000_001), "0.000001");
        assert_eq!(format_f64(3.0), "3");
    }
}
