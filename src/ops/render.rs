//! Text for humans: `goflow status` (a summary of /status) and `goflow stats` (a percentile
//! table per histogram, last minute beside since start, and its distribution as a one-line bar
//! chart of Unicode blocks over power-of-two buckets). Pure functions of the JSON the API
//! served, so they are unit-tested without a daemon.

use std::fmt::Write as _;

use super::histogram::{Bucket, HistogramReport, StatsReport, Summary};
use super::status::{KafkaStatus, Status, human_duration};
use crate::cli::count;

/// Bar heights, lowest to highest; a bucket with no values is drawn as a space.
const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One value in a histogram's unit: `850µs`, `1.25ms`, `3.10s` for times, else the number.
pub fn format_value(v: u64, unit: &str) -> String {
    if unit != "us" {
        return v.to_string();
    }
    if v < 1_000 {
        format!("{v}µs")
    } else if v < 1_000_000 {
        format!("{:.2}ms", v as f64 / 1e3)
    } else {
        format!("{:.2}s", v as f64 / 1e6)
    }
}

/// `1.5 KB`, `3.2 MB`.
pub fn format_bytes(v: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut x = v as f64;
    let mut u = 0;
    while x >= 1000.0 && u + 1 < UNITS.len() {
        x /= 1000.0;
        u += 1;
    }
    let unit = UNITS.get(u).copied().unwrap_or("B");
    if u == 0 {
        format!("{v} B")
    } else {
        format!("{x:.1} {unit}")
    }
}

/// The distribution as one line of blocks, one per power-of-two bucket from the lowest to the
/// highest non-empty one (empty buckets in between drawn as spaces), scaled to the fullest.
pub fn bar_chart(buckets: &[Bucket]) -> String {
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return String::new();
    };
    let top = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    if top == 0 {
        return String::new();
    }
    let mut out = String::new();
    // Walk every power-of-two bucket between the first and last, filling the gaps.
    let mut le = first.le;
    let mut it = buckets.iter().peekable();
    loop {
        let count = match it.peek() {
            Some(b) if b.le == le => {
                let c = b.count;
                it.next();
                c
            }
            _ => 0,
        };
        out.push(block(count, top));
        if le >= last.le {
            break;
        }
        le = if le == 0 {
            1
        } else {
            le.saturating_mul(2).saturating_add(1)
        };
    }
    out
}

fn block(count: u64, top: u64) -> char {
    if count == 0 || top == 0 {
        return ' ';
    }
    // 1..=8 levels, any non-zero count at least the lowest block.
    let level = (count.saturating_mul(8)).div_ceil(top).clamp(1, 8);
    BLOCKS
        .get(usize::try_from(level - 1).unwrap_or(0))
        .copied()
        .unwrap_or('█')
}

/// Lower bound of the bucket whose upper bound is `le`.
fn bucket_low(le: u64) -> u64 {
    if le == 0 { 0 } else { le / 2 + 1 }
}

fn histogram_title(h: &HistogramReport) -> String {
    match &h.backend {
        Some(b) => format!("{} [{b}]", h.title),
        None => h.title.clone(),
    }
}

fn summary_rows<'a>(s: &Summary, unit: &str, per: &'a str) -> [(&'a str, String); 7] {
    let v = |x: u64| {
        if s.count == 0 {
            "-".to_owned()
        } else {
            format_value(x, unit)
        }
    };
    [
        (
            if per.is_empty() { "count" } else { per },
            s.count.to_string(),
        ),
        ("p50", v(s.p50)),
        ("p90", v(s.p90)),
        ("p99", v(s.p99)),
        ("p99.9", v(s.p999)),
        ("max", v(s.max)),
        (
            "mean",
            if s.count == 0 {
                "-".to_owned()
            } else {
                format_value(s.mean.round() as u64, unit)
            },
        ),
    ]
}

/// `goflow stats`.
pub fn render_stats(r: &StatsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "goflow latency and size histograms (up {}; last minute = last {} s)",
        human_duration(r.uptime_secs),
        r.window_secs
    );
    for h in &r.histograms {
        out.push('\n');
        let _ = writeln!(out, "{} ({})", histogram_title(h), h.name);
        let _ = writeln!(
            out,
            "  {:<9} {:>12} {:>12}",
            "", "last minute", "since start"
        );
        let lm = summary_rows(&h.last_minute, &h.unit, &h.per);
        let ss = summary_rows(&h.since_start, &h.unit, &h.per);
        for ((label, a), (_, b)) in lm.iter().zip(ss.iter()) {
            let _ = writeln!(out, "  {label:<9} {a:>12} {b:>12}");
        }
        for (label, s) in [
            ("last minute", &h.last_minute),
            ("since start", &h.since_start),
        ] {
            let chart = bar_chart(&s.buckets);
            if chart.is_empty() {
                continue;
            }
            let lo = s.buckets.first().map(|b| bucket_low(b.le)).unwrap_or(0);
            let hi = s.buckets.last().map(|b| b.le).unwrap_or(0);
            let _ = writeln!(
                out,
                "  {label:<12} {lo_s:>9} |{chart}| {hi_s}",
                lo_s = format_value(lo, &h.unit),
                hi_s = format_value(hi, &h.unit),
            );
        }
    }
    out
}

/// A Kafka backend's producer in a few lines, each starting with `indent`: what the brokers
/// acknowledged, in flight, delivery errors by reason, the produce-to-ack times and their
/// distribution over power-of-two buckets.
pub fn render_kafka(k: &KafkaStatus, indent: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{indent}kafka: {} messages, {} flows, {} acknowledged; {} in flight; {}",
        k.messages,
        k.flows,
        format_bytes(k.bytes),
        k.in_flight,
        if k.connected {
            "broker answers"
        } else {
            "NO BROKER ANSWERS"
        }
    );
    let errors: Vec<String> = k
        .delivery_errors_by_reason
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "{indent}kafka delivery errors: {}{}",
        k.delivery_errors,
        if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join(", "))
        }
    );
    let a = &k.ack_latency_us;
    let _ = writeln!(
        out,
        "{indent}kafka produce-to-ack: {} acks, mean {}, p50 <= {}, p90 <= {}, p99 <= {}, max {}",
        a.count,
        format_value(a.mean, "us"),
        format_value(a.p50, "us"),
        format_value(a.p90, "us"),
        format_value(a.p99, "us"),
        format_value(a.max, "us")
    );
    let buckets: Vec<Bucket> = k
        .ack_latency_buckets_us
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| Bucket {
            le: 1u64 << i.min(63),
            count: *n,
        })
        .collect();
    let chart = bar_chart(&buckets);
    if !chart.is_empty() {
        let lo = buckets.first().map(|b| bucket_low(b.le)).unwrap_or(0);
        let hi = buckets.last().map(|b| b.le).unwrap_or(0);
        let _ = writeln!(
            out,
            "{indent}kafka produce-to-ack since start {} |{chart}| {}",
            format_value(lo, "us"),
            format_value(hi, "us")
        );
    }
    out
}

/// The Kafka frontend: group, rates, bad messages, and one line per assigned partition.
fn render_kafka_frontend(out: &mut String, k: &super::status::KafkaFrontendStatus) {
    let bad: Vec<String> = k
        .bad_messages
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "\nkafka frontend: group {} on {} ({}), {} partitions{}\n  \
         {} messages, {} flows ({:.0}/s), {} rows stored ({:.0}/s), lag {}, bad messages {}, \
         {} rebalances",
        k.group_id,
        k.topics.join(", "),
        k.format,
        k.partitions.len(),
        if k.paused {
            ", PAUSED (the backends hold their bound)"
        } else {
            ""
        },
        k.messages,
        k.flows,
        k.flows_per_sec,
        k.rows_stored,
        k.rows_per_sec,
        k.lag,
        if bad.is_empty() {
            "none".to_owned()
        } else {
            bad.join(", ")
        },
        k.rebalances
    );
    for p in &k.partitions {
        let lag = if p.lag < 0 {
            "?".to_owned()
        } else {
            p.lag.to_string()
        };
        let _ = writeln!(
            out,
            "  {}/{}: next {}, stored {}, high watermark {}, lag {lag}",
            p.topic, p.partition, p.next_offset, p.stored_offset, p.high_watermark
        );
    }
}

fn ago(now_us: i64, t_us: Option<i64>) -> String {
    match t_us {
        None => "never".to_owned(),
        Some(t) => {
            let secs = u64::try_from(now_us.saturating_sub(t) / 1_000_000).unwrap_or(0);
            format!("{} ago", human_duration(secs))
        }
    }
}

/// `goflow status`; `now_us` is the current Unix time in microseconds (for "ago" columns).
pub fn render_status(st: &Status, now_us: i64) -> String {
    let mut out = String::new();
    let r = &st.receiver;
    let _ = writeln!(
        out,
        "goflow {}, up {}; receiver {} on {}, {}/{} workers running",
        st.version,
        human_duration(st.uptime_secs),
        if r.kind.is_empty() { "?" } else { &r.kind },
        if r.bind.is_empty() { "?" } else { &r.bind },
        r.running,
        r.workers
    );
    let t = &st.totals;
    let _ = writeln!(
        out,
        "received  {} ({}), {}, {}; {}",
        count(t.datagrams, "datagram", "datagrams"),
        format_bytes(t.bytes),
        count(t.records, "record", "records"),
        count(t.batches, "batch", "batches"),
        count(t.templates, "template", "templates")
    );
    let drops: Vec<String> = t
        .drops
        .datagram_reasons()
        .iter()
        .chain(t.drops.record_reasons().iter())
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        out,
        "drops     {}",
        if drops.is_empty() {
            "none".to_owned()
        } else {
            drops.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "sequence  {} missing (reported by exporters' sequence numbers)",
        t.sequence_missing
    );

    if let Some(k) = &st.kafka {
        render_kafka_frontend(&mut out, k);
    }

    out.push_str("\nbackends\n");
    if st.backends.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let _ = writeln!(
            out,
            "  {:<12} {:<9} {:<9} {:>12} {:>9} {:>10} {:>8} {:<24}",
            "NAME", "TYPE", "HEALTH", "ROWS", "DROPPED", "QUEUED", "ERRORS", "LAST FLUSH"
        );
        for b in &st.backends {
            let flush = match (b.last_flush_unix_us, b.last_flush_duration_us) {
                (Some(_), Some(d)) => format!(
                    "{} ({})",
                    ago(now_us, b.last_flush_unix_us),
                    format_value(d, "us")
                ),
                _ => ago(now_us, b.last_flush_unix_us),
            };
            let _ = writeln!(
                out,
                "  {:<12} {:<9} {:<9} {:>12} {:>9} {:>10} {:>8} {:<24}",
                b.name,
                b.kind,
                if b.healthy { "ok" } else { "UNHEALTHY" },
                b.rows_written,
                b.rows_dropped,
                format_bytes(b.queued_bytes),
                b.errors,
                flush
            );
            if let Some(e) = &b.last_error {
                let _ = writeln!(out, "      last error: {e}");
            }
            for (k, v) in &b.sink {
                match v {
                    serde_json::Value::String(s) => {
                        let _ = writeln!(out, "      {k}: {s}");
                    }
                    v => {
                        let _ = writeln!(out, "      {k}: {v}");
                    }
                }
            }
            if let Some(k) = &b.kafka {
                out.push_str(&render_kafka(k, "      "));
            }
        }
    }

    out.push_str("\nexporters\n");
    if st.exporters.is_empty() {
        out.push_str("  (none yet)\n");
    } else {
        let _ = writeln!(
            out,
            "  {:<40} {:<8} {:<12} {:>12} {:>9} {:<18} {:>9} {:<12}",
            "ADDRESS",
            "VERSION",
            "DOMAINS",
            "RECORDS",
            "MISSING",
            "SAMPLING",
            "TEMPLATES",
            "LAST SEEN"
        );
        for e in &st.exporters {
            let list = |v: Vec<String>| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.join(",")
                }
            };
            let sampling = if e.sampling_rate == 0 || e.sampling_source == "unknown" {
                "unknown".to_owned()
            } else {
                format!("1:{} {}", e.sampling_rate, e.sampling_source)
            };
            let _ = writeln!(
                out,
                "  {:<40} {:<8} {:<12} {:>12} {:>9} {:<18} {:>9} {:<12}",
                e.address,
                list(e.versions.iter().map(u16::to_string).collect()),
                list(e.domains.iter().map(u32::to_string).collect()),
                e.records,
                e.sequence_missing,
                sampling,
                e.templates,
                ago(now_us, e.last_seen_unix_us)
            );
        }
        let shown = st.exporters.len() as u64;
        if st.exporters_total > shown {
            let _ = writeln!(
                out,
                "  ... {shown} of {} shown (GET /status?offset={}&limit=N for more)",
                st.exporters_total,
                st.exporters_next.unwrap_or(shown)
            );
        }
    }
    let health = st.health();
    if !health.healthy {
        out.push_str("\nNOT HEALTHY:\n");
        for r in &health.reasons {
            let _ = writeln!(out, "  {r}");
        }
    }
    // The padded last columns leave trailing blanks.
    let mut trimmed = String::with_capacity(out.len());
    for line in out.lines() {
        trimmed.push_str(line.trim_end());
        trimmed.push('\n');
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::{BackendStatus, ExporterStatus, ReceiverStatus, Totals};

    #[test]
    fn bars_scale_to_the_fullest_bucket_and_fill_gaps() {
        let b = |le, count| Bucket { le, count };
        assert_eq!(bar_chart(&[]), "");
        assert_eq!(bar_chart(&[b(31, 5)]), "█");
        // 1, [3 missing], 7, 15: gap drawn as a space; 1 of 80 still shows.
        assert_eq!(bar_chart(&[b(1, 1), b(7, 40), b(15, 80)]), "▁ ▄█");
        assert_eq!(bar_chart(&[b(0, 8), b(1, 1), b(3, 2)]), "█▁▂");
    }

    #[test]
    fn values_carry_units() {
        assert_eq!(format_value(850, "us"), "850µs");
        assert_eq!(format_value(1_250, "us"), "1.25ms");
        assert_eq!(format_value(3_100_000, "us"), "3.10s");
        assert_eq!(format_value(256, "count"), "256");
        assert_eq!(format_bytes(999), "999 B");
        assert_eq!(format_bytes(2_928), "2.9 KB");
    }

    #[test]
    fn stats_table_shows_percentiles_and_chart() {
        let s = Summary {
            count: 10,
            sum: 3000,
            min: 100,
            max: 1_000,
            mean: 300.0,
            p50: 150,
            p90: 900,
            p99: 1_000,
            p999: 1_000,
            buckets: vec![Bucket { le: 255, count: 8 }, Bucket { le: 1023, count: 2 }],
            cumulative: Vec::new(),
        };
        let r = StatsReport {
            uptime_secs: 61,
            window_secs: 60,
            histograms: vec![HistogramReport {
                name: "flush_time_us".into(),
                title: "backend flush duration".into(),
                unit: "us".into(),
                per: "flushes".into(),
                backend: Some("pg".into()),
                last_minute: Summary::default(),
                since_start: s,
            }],
        };
        let text = render_stats(&r);
        assert!(
            text.contains("backend flush duration [pg] (flush_time_us)"),
            "{text}"
        );
        assert!(
            text.contains("  flushes              0           10\n"),
            "{text}"
        );
        assert!(
            text.contains("  p50                  -        150µs\n"),
            "{text}"
        );
        assert!(
            text.contains("  max                  -       1.00ms\n"),
            "{text}"
        );
        assert!(
            text.contains("since start      128µs |█ ▂| 1.02ms"),
            "{text}"
        );
        assert!(!text.contains("last minute      "), "{text}");
    }

    #[test]
    fn status_summary_lists_backends_exporters_and_drops() {
        let mut st = Status {
            version: "0.1.0".into(),
            uptime_secs: 3700,
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
                rows_written: 600,
                last_flush_unix_us: Some(9_000_000),
                last_flush_duration_us: Some(1_500),
                sink: [("table_size".to_owned(), serde_json::json!(8192))].into(),
                ..BackendStatus::default()
            }],
            totals: Totals {
                datagrams: 20,
                bytes: 29_280,
                records: 600,
                ..Totals::default()
            },
            exporters: vec![ExporterStatus {
                address: "10.0.0.1".into(),
                versions: vec![5],
                domains: vec![0],
                records: 600,
                sampling_rate: 100,
                sampling_source: "v5_header".into(),
                last_seen_unix_us: Some(8_000_000),
                ..ExporterStatus::default()
            }],
            ..Status::default()
        };
        let text = render_status(&st, 10_000_000);
        assert!(
            text.starts_with("goflow 0.1.0, up 1h 1m; receiver uring on 0.0.0.0:2055, 2/2"),
            "{text}"
        );
        assert!(
            text.contains("20 datagrams (29.3 KB), 600 records"),
            "{text}"
        );
        assert!(text.contains("drops     none\n"), "{text}");
        assert!(text.contains("1s ago (1.50ms)"), "{text}");
        assert!(text.contains("table_size: 8192"), "{text}");
        assert!(text.contains("1:100 v5_header"), "{text}");
        assert!(text.contains("2s ago"), "{text}");
        st.totals.drops.kernel = 2;
        st.backends[0].healthy = false;
        let text = render_status(&st, 10_000_000);
        assert!(text.contains("drops     kernel 2\n"), "{text}");
        assert!(
            text.contains("NOT HEALTHY:\n  backend pg (postgres): unhealthy"),
            "{text}"
        );
    }
}
