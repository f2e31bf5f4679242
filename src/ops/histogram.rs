//! Latency and size histograms, recorded without locks on the hot path. Each receive worker owns
//! a [`LocalHistograms`] and records into it with plain stores; about once a second
//! ([`PUBLISH_INTERVAL`]) it merges them into the shared [`HistogramHub`] and resets them, taking
//! each metric's mutex once. Backend threads record flushes straight into the hub (once per
//! flush, not per record). The hub keeps every metric "since start" and in a ring of
//! [`WINDOW_SLOTS`] intervals of [`WINDOW_SLOT_SECS`] seconds, merged at read time into "the last
//! minute". hdrhistogram keeps no exact sum, so [`Recorded`] carries one beside it (Prometheus
//! summaries want `_sum`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use goflow_codec::UnixMicros;
use goflow_writers::backend::{FlushHook, FlushReport};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// How often a worker merges its local histograms into the hub.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Width of one interval of the "last minute" ring.
pub const WINDOW_SLOT_SECS: u64 = 10;
/// Intervals in the ring: together one minute.
pub const WINDOW_SLOTS: usize = 6;

/// What a histogram's values count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds.
    Micros,
    /// A plain count (datagrams, records).
    Count,
}

impl Unit {
    pub fn as_str(&self) -> &'static str {
        match self {
            Unit::Micros => "us",
            Unit::Count => "count",
        }
    }
}

/// One kind of histogram: its stable name, a title for humans, unit and range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricSpec {
    /// Stable key in /stats JSON.
    pub name: &'static str,
    /// One line for `goflow stats`.
    pub title: &'static str,
    pub unit: Unit,
    /// What one recorded value stands for, plural (`goflow stats` labels the count with it).
    pub per: &'static str,
    /// Largest value kept exactly; larger ones are clamped to it.
    high: u64,
    /// Significant decimal digits of precision (hdrhistogram's sigfig).
    sigfig: u8,
    /// Upper bounds (inclusive, in the unit) of the Prometheus histogram buckets /metrics
    /// exports; `+Inf` follows.
    pub bounds: &'static [u64],
}

/// Bucket bounds of latencies, µs: 100 µs to 60 s.
const LATENCY_BOUNDS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];
/// Bucket bounds of the receive-to-durable age, µs: 10 ms to an hour (a backend outage with a
/// spool delays rows by minutes).
const AGE_BOUNDS_US: &[u64] = &[
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
];
/// Bucket bounds of counts (datagrams per batch, records per datagram).
const COUNT_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16_384];

/// Decode + encode time of one batch, µs.
pub const BATCH_TIME: MetricSpec = MetricSpec {
    name: "batch_time_us",
    title: "batch decode+encode time",
    unit: Unit::Micros,
    per: "batches",
    high: 60_000_000,
    sigfig: 2,
    bounds: LATENCY_BOUNDS_US,
};
/// Receive timestamp -> the backend flush that made the datagram durable, µs: one value per
/// row made durable (see [`HistogramHub::record_commit`]).
pub const COMMIT_AGE: MetricSpec = MetricSpec {
    name: "commit_age_us",
    title: "row age at commit (datagram received -> row durable)",
    unit: Unit::Micros,
    per: "rows",
    high: 3_600_000_000,
    sigfig: 2,
    bounds: AGE_BOUNDS_US,
};
/// One backend flush, µs.
pub const FLUSH_TIME: MetricSpec = MetricSpec {
    name: "flush_time_us",
    title: "backend flush duration",
    unit: Unit::Micros,
    per: "flushes",
    high: 600_000_000,
    sigfig: 2,
    bounds: LATENCY_BOUNDS_US,
};
/// Datagrams in one batch.
pub const BATCH_DATAGRAMS: MetricSpec = MetricSpec {
    name: "batch_datagrams",
    title: "datagrams per batch",
    unit: Unit::Count,
    per: "batches",
    high: 65_535,
    sigfig: 3,
    bounds: COUNT_BOUNDS,
};
/// Flow records in one datagram.
pub const DATAGRAM_RECORDS: MetricSpec = MetricSpec {
    name: "datagram_records",
    title: "records per datagram",
    unit: Unit::Count,
    per: "datagrams",
    high: 65_535,
    sigfig: 3,
    bounds: COUNT_BOUNDS,
};

/// A histogram and the exact sum, minimum and maximum of the values recorded in it
/// (hdrhistogram reports min and max rounded to its precision).
#[derive(Clone, Debug)]
pub struct Recorded {
    hist: Histogram<u64>,
    bounds: &'static [u64],
    sum: u64,
    min: u64,
    max: u64,
}

impl Recorded {
    pub fn new(spec: &MetricSpec) -> Self {
        // The bounds are constants above (1 <= 2 * low <= high, sigfig <= 5); a unit test builds
        // every spec, so this cannot fail at run time.
        let hist = Histogram::new_with_bounds(1, spec.high, spec.sigfig)
            .expect("histogram bounds are valid constants");
        Recorded {
            hist,
            bounds: spec.bounds,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one value (clamped to the spec's range).
    #[inline]
    pub fn record(&mut self, value: u64) {
        self.hist.saturating_record(value);
        self.sum = self.sum.saturating_add(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Records `value` `n` times.
    #[inline]
    pub fn record_n(&mut self, value: u64, n: u64) {
        if n > 0 {
            self.hist.saturating_record_n(value, n);
            self.sum = self.sum.saturating_add(value.saturating_mul(n));
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
    }

    /// Adds another histogram of the same spec.
    pub fn add(&mut self, other: &Recorded) {
        // Same spec, same bounds: `add` cannot run out of range. Should it ever, the values are
        // re-recorded one bucket at a time (clamped) rather than lost.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn reset(&mut self) {
        self.hist.reset();
        self.sum = 0;
        self.min = u64::MAX;
        self.max = 0;
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// Percentiles, sum and log2 buckets.
    pub fn summary(&self) -> Summary {
        let h = &self.hist;
        if h.is_empty() {
            return Summary {
                cumulative: self
                    .bounds
                    .iter()
                    .map(|&le| Bucket { le, count: 0 })
                    .collect(),
                ..Summary::default()
            };
        }
        // hdrhistogram answers with the top of a value's bucket; never above the exact max.
        let q = |quantile: f64| h.value_at_quantile(quantile).clamp(self.min, self.max);
        let mut buckets: Vec<Bucket> = Vec::new();
        // Prometheus buckets: each recorded value (the middle of its hdrhistogram bucket,
        // within the spec's precision) counted under the first bound at or above it.
        let mut cumulative: Vec<Bucket> = self
            .bounds
            .iter()
            .map(|&le| Bucket { le, count: 0 })
            .collect();
        for v in h.iter_recorded() {
            let mid = h.median_equivalent(v.value_iterated_to());
            if let Some(b) = cumulative.iter_mut().find(|b| mid <= b.le) {
                b.count += v.count_at_value();
            }
        }
        let mut running = 0;
        for b in &mut cumulative {
            running += b.count;
            b.count = running;
        }
        for v in h.iter_recorded() {
            let value = v.value_iterated_to();
            let le = log2_bucket_upper(value);
            match buckets.last_mut() {
                Some(b) if b.le == le => b.count += v.count_at_value(),
                _ => buckets.push(Bucket {
                    le,
                    count: v.count_at_value(),
                }),
            }
        }
        Summary {
            count: h.len(),
            sum: self.sum,
            min: self.min,
            max: self.max,
            mean: h.mean(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            buckets,
            cumulative,
        }
    }
}

/// Upper bound (inclusive) of the power-of-two bucket holding `v`: 0, 1, 3, 7, 15, ...
pub fn log2_bucket_upper(v: u64) -> u64 {
    if v == 0 {
        0
    } else {
        let bits = 64 - v.leading_zeros();
        if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }
}

/// Values recorded up to `le` (inclusive) since the previous bucket's `le`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub le: u64,
    pub count: u64,
}

/// One histogram over one period, as /stats publishes it. Values are in the metric's unit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub count: u64,
    pub sum: u64,
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    /// Power-of-two buckets from the lowest to the highest recorded value (empty ones inside
    /// that range are omitted), for drawing the distribution.
    pub buckets: Vec<Bucket>,
    /// Values at or below each of the spec's fixed bounds (cumulative, as Prometheus
    /// histograms count; empty when nothing was recorded). Not in /stats' JSON.
    #[serde(skip)]
    pub cumulative: Vec<Bucket>,
}

/// A metric since start plus a ring of recent intervals.
#[derive(Debug)]
struct Windowed {
    spec: MetricSpec,
    since_start: Recorded,
    /// (interval number since the hub's start, values recorded in it); `u64::MAX` = unused.
    slots: Vec<(u64, Recorded)>,
}

impl Windowed {
    fn new(spec: MetricSpec) -> Self {
        Windowed {
            spec,
            since_start: Recorded::new(&spec),
            slots: (0..WINDOW_SLOTS)
                .map(|_| (u64::MAX, Recorded::new(&spec)))
                .collect(),
        }
    }

    fn slot_mut(&mut self, interval: u64) -> Option<&mut Recorded> {
        let i = (interval % WINDOW_SLOTS as u64) as usize;
        let slot = self.slots.get_mut(i)?;
        if slot.0 != interval {
            slot.0 = interval;
            slot.1.reset();
        }
        Some(&mut slot.1)
    }

    fn add(&mut self, interval: u64, r: &Recorded) {
        self.since_start.add(r);
        if let Some(slot) = self.slot_mut(interval) {
            slot.add(r);
        }
    }

    fn record(&mut self, interval: u64, value: u64) {
        self.record_n(interval, value, 1);
    }

    fn record_n(&mut self, interval: u64, value: u64, n: u64) {
        self.since_start.record_n(value, n);
        if let Some(slot) = self.slot_mut(interval) {
            slot.record_n(value, n);
        }
    }

    /// The intervals still inside the window at `interval`, merged.
    fn last_minute(&self, interval: u64) -> Recorded {
        let mut out = Recorded::new(&self.spec);
        for (i, r) in &self.slots {
            if *i <= interval && interval - *i < WINDOW_SLOTS as u64 {
                out.add(r);
            }
        }
        out
    }
}

fn lock(m: &Mutex<Windowed>) -> std::sync::MutexGuard<'_, Windowed> {
    // A panic while holding the lock leaves a histogram that is still consistent enough to read.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared side: every worker's published histograms and every backend's flushes.
#[derive(Debug)]
pub struct HistogramHub {
    start: Instant,
    batch_time: Mutex<Windowed>,
    batch_datagrams: Mutex<Windowed>,
    datagram_records: Mutex<Windowed>,
    /// Per backend, in the order given to [`HistogramHub::new`].
    commit_age: Vec<(String, Mutex<Windowed>)>,
    /// One per backend, in configuration order: (backend name, flush durations).
    flush_time: Vec<(String, Mutex<Windowed>)>,
}

impl HistogramHub {
    /// A hub for the given backends (their names, in the order `record_flush` indexes them).
    pub fn new<S: AsRef<str>>(backends: &[S]) -> Self {
        HistogramHub {
            start: Instant::now(),
            batch_time: Mutex::new(Windowed::new(BATCH_TIME)),
            batch_datagrams: Mutex::new(Windowed::new(BATCH_DATAGRAMS)),
            datagram_records: Mutex::new(Windowed::new(DATAGRAM_RECORDS)),
            commit_age: backends
                .iter()
                .map(|b| (b.as_ref().to_owned(), Mutex::new(Windowed::new(COMMIT_AGE))))
                .collect(),
            flush_time: backends
                .iter()
                .map(|b| (b.as_ref().to_owned(), Mutex::new(Windowed::new(FLUSH_TIME))))
                .collect(),
        }
    }

    fn interval(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs() / WINDOW_SLOT_SECS
    }

    /// Records one flush given only its duration and the age of its oldest datagram at commit
    /// (`None` when it carried no rows). [`HistogramHub::record_commit`] (what
    /// [`HistogramHub::flush_hook`] calls) records an age per chunk instead.
    pub fn record_flush(&self, backend: usize, duration_us: u64, oldest_age_us: Option<u64>) {
        let interval = self.interval(Instant::now());
        if let Some((_, m)) = self.flush_time.get(backend) {
            lock(m).record(interval, duration_us);
        }
        if let Some(age) = oldest_age_us
            && let Some((_, m)) = self.commit_age.get(backend)
        {
            lock(m).record(interval, age);
        }
    }

    /// Called by a backend's thread after each successful flush: the flush's duration once, and
    /// for every row of every chunk in it the age at commit of the chunk's oldest datagram
    /// (`committed_us - received_us`, clamped at 0; a chunk spans at most a few tens of
    /// milliseconds of traffic, so that is each row's age within that margin). The age count is
    /// thus the rows made durable. One lock per metric, once per flush.
    pub fn record_commit(
        &self,
        backend: usize,
        duration_us: u64,
        committed_us: UnixMicros,
        chunks: &[(UnixMicros, u64)],
    ) {
        let interval = self.interval(Instant::now());
        if let Some((_, m)) = self.flush_time.get(backend) {
            lock(m).record(interval, duration_us);
        }
        if !chunks.is_empty()
            && let Some((_, m)) = self.commit_age.get(backend)
        {
            let mut w = lock(m);
            for (received_us, rows) in chunks {
                let age = u64::try_from(committed_us.saturating_sub(*received_us)).unwrap_or(0);
                w.record_n(interval, age, *rows);
            }
        }
    }

    /// The flush hook for backend number `backend` (its index in the names given to
    /// [`HistogramHub::new`]): pass it as `BackendOptions::on_flush`.
    pub fn flush_hook(self: &Arc<Self>, backend: usize) -> FlushHook {
        let hub = Arc::clone(self);
        Arc::new(move |r: &FlushReport<'_>| {
            hub.record_commit(backend, r.duration_us, r.committed_us, r.chunks);
        })
    }

    /// Every histogram, last minute and since start, as of `now`.
    pub fn report(&self, now: Instant) -> StatsReport {
        let interval = self.interval(now);
        let entry = |m: &Mutex<Windowed>, backend: Option<&str>| {
            let w = lock(m);
            HistogramReport {
                name: w.spec.name.to_owned(),
                title: w.spec.title.to_owned(),
                unit: w.spec.unit.as_str().to_owned(),
                per: w.spec.per.to_owned(),
                backend: backend.map(str::to_owned),
                last_minute: w.last_minute(interval).summary(),
                since_start: w.since_start.summary(),
            }
        };
        let mut histograms = vec![entry(&self.batch_time, None)];
        for (name, m) in &self.commit_age {
            histograms.push(entry(m, Some(name)));
        }
        for (name, m) in &self.flush_time {
            histograms.push(entry(m, Some(name)));
        }
        histograms.push(entry(&self.batch_datagrams, None));
        histograms.push(entry(&self.datagram_records, None));
        StatsReport {
            uptime_secs: now.saturating_duration_since(self.start).as_secs(),
            window_secs: WINDOW_SLOT_SECS * WINDOW_SLOTS as u64,
            histograms,
        }
    }
}

/// Records-per-datagram values counted in a plain array before they reach the histogram: a
/// 1500-byte datagram carries at most a few dozen records, and an array increment is several
/// times cheaper than a histogram record, which matters at one call per datagram.
const SMALL_RECORDS: usize = 128;

/// One worker's histograms. Recording is a few arithmetic operations and stores: no locks, no
/// atomics, no allocation. [`LocalHistograms::maybe_publish`] hands them to the hub.
#[derive(Debug)]
pub struct LocalHistograms {
    hub: Arc<HistogramHub>,
    batch_time: Recorded,
    batch_datagrams: Recorded,
    datagram_records: Recorded,
    /// `small_records[n]`: datagrams with `n` records since the last publish.
    small_records: [u64; SMALL_RECORDS],
    last_publish: Instant,
}

impl LocalHistograms {
    pub fn new(hub: Arc<HistogramHub>) -> Self {
        LocalHistograms {
            hub,
            batch_time: Recorded::new(&BATCH_TIME),
            batch_datagrams: Recorded::new(&BATCH_DATAGRAMS),
            datagram_records: Recorded::new(&DATAGRAM_RECORDS),
            small_records: [0; SMALL_RECORDS],
            last_publish: Instant::now(),
        }
    }

    /// One batch: its decode+encode time and how many datagrams it held.
    #[inline]
    pub fn record_batch(&mut self, batch_us: u64, datagrams: u64) {
        self.batch_time.record(batch_us);
        self.batch_datagrams.record(datagrams);
    }

    /// One decoded datagram and the flow records it carried.
    #[inline]
    pub fn record_datagram(&mut self, records: u64) {
        match usize::try_from(records)
            .ok()
            .and_then(|i| self.small_records.get_mut(i))
        {
            Some(c) => *c += 1,
            None => self.datagram_records.record(records),
        }
    }

    /// Publishes when [`PUBLISH_INTERVAL`] has passed since the last publish. Call it once per
    /// wake-up of the worker loop (also when no batch came). Returns whether it published.
    #[inline]
    pub fn maybe_publish(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last_publish) < PUBLISH_INTERVAL {
            return false;
        }
        self.publish(now);
        true
    }

    /// Merges everything recorded since the last publish into the hub and resets (at shutdown,
    /// or from `maybe_publish`).
    pub fn publish(&mut self, now: Instant) {
        self.last_publish = now;
        for (n, c) in self.small_records.iter_mut().enumerate() {
            if *c > 0 {
                self.datagram_records.record_n(n as u64, *c);
                *c = 0;
            }
        }
        let interval = self.hub.interval(now);
        for (local, shared) in [
            (&mut self.batch_time, &self.hub.batch_time),
            (&mut self.batch_datagrams, &self.hub.batch_datagrams),
            (&mut self.datagram_records, &self.hub.datagram_records),
        ] {
            if !local.is_empty() {
                lock(shared).add(interval, local);
                local.reset();
            }
        }
    }
}

impl Drop for LocalHistograms {
    /// A worker that ends publishes what it still holds.
    fn drop(&mut self) {
        self.publish(Instant::now());
    }
}

/// GET /stats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsReport {
    pub uptime_secs: u64,
    /// Length of the "last minute" window.
    pub window_secs: u64,
    pub histograms: Vec<HistogramReport>,
}

/// One histogram in /stats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistogramReport {
    /// Stable key: `batch_time_us`, `commit_age_us`, `flush_time_us`, `batch_datagrams`,
    /// `datagram_records`.
    pub name: String,
    pub title: String,
    /// `us` or `count`.
    pub unit: String,
    /// What one value stands for, plural: `batches`, `rows`, `flushes`, `datagrams` (the
    /// summaries' `count` is a number of these).
    pub per: String,
    /// The backend, for per-backend histograms (`flush_time_us`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    pub last_minute: Summary,
    pub since_start: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_builds() {
        for spec in [
            BATCH_TIME,
            COMMIT_AGE,
            FLUSH_TIME,
            BATCH_DATAGRAMS,
            DATAGRAM_RECORDS,
        ] {
            let mut r = Recorded::new(&spec);
            r.record(spec.high.saturating_mul(10));
            assert_eq!(r.count(), 1);
        }
    }

    #[test]
    fn summary_percentiles_sum_and_buckets() {
        let mut r = Recorded::new(&BATCH_DATAGRAMS);
        for v in 1..=100 {
            r.record(v);
        }
        let s = r.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.sum, 5050);
        assert_eq!((s.min, s.max), (1, 100));
        assert_eq!(s.p50, 50);
        assert_eq!(s.p90, 90);
        assert_eq!(s.p99, 99);
        assert_eq!(s.p999, 100);
        // 1 | 2-3 | 4-7 | 8-15 | 16-31 | 32-63 | 64-127
        let les: Vec<u64> = s.buckets.iter().map(|b| b.le).collect();
        assert_eq!(les, [1, 3, 7, 15, 31, 63, 127]);
        let counts: Vec<u64> = s.buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, [1, 2, 4, 8, 16, 32, 37]);
        // Prometheus buckets: cumulative at the spec's fixed bounds.
        let cum: Vec<(u64, u64)> = s.cumulative.iter().map(|b| (b.le, b.count)).collect();
        assert_eq!(
            cum,
            [
                (1, 1),
                (2, 2),
                (4, 4),
                (8, 8),
                (16, 16),
                (32, 32),
                (64, 64),
                (128, 100),
                (256, 100),
                (512, 100),
                (1024, 100),
                (4096, 100),
                (16_384, 100)
            ]
        );
        // Latencies: 150 µs and 3 ms land under 250 µs and 5 ms.
        let mut r = Recorded::new(&FLUSH_TIME);
        r.record(150);
        r.record(3_000);
        let s = r.summary();
        let at = |le: u64| s.cumulative.iter().find(|b| b.le == le).map(|b| b.count);
        assert_eq!(
            (at(100), at(250), at(2_500), at(5_000)),
            (Some(0), Some(1), Some(1), Some(2))
        );
    }

    #[test]
    fn zero_is_a_bucket_of_its_own() {
        assert_eq!(log2_bucket_upper(0), 0);
        assert_eq!(log2_bucket_upper(1), 1);
        assert_eq!(log2_bucket_upper(2), 3);
        assert_eq!(log2_bucket_upper(u64::MAX), u64::MAX);
        let mut r = Recorded::new(&DATAGRAM_RECORDS);
        r.record(0);
        r.record(30);
        let s = r.summary();
        assert_eq!(
            s.buckets,
            [Bucket { le: 0, count: 1 }, Bucket { le: 31, count: 1 }]
        );
    }

    #[test]
    fn local_publishes_into_hub_and_resets() {
        let hub = Arc::new(HistogramHub::new(&["pg", "file"]));
        let mut local = LocalHistograms::new(Arc::clone(&hub));
        for _ in 0..10 {
            local.record_batch(150, 256);
            for _ in 0..255 {
                local.record_datagram(30);
            }
            // Past the small-count array: straight into the histogram.
            local.record_datagram(1_000);
        }
        let t0 = Instant::now();
        // Not yet: less than a second since the local was made.
        assert!(!local.maybe_publish(t0));
        assert_eq!(hub.report(t0).histograms[0].since_start.count, 0);
        let t1 = t0 + PUBLISH_INTERVAL;
        assert!(local.maybe_publish(t1));
        let rep = hub.report(t1);
        let by = |name: &str| {
            rep.histograms
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.since_start.clone())
                .unwrap_or_default()
        };
        assert_eq!(by("batch_time_us").count, 10);
        assert_eq!(by("batch_datagrams").sum, 2560);
        assert_eq!(by("datagram_records").count, 2560);
        assert_eq!(by("datagram_records").sum, 2550 * 30 + 10 * 1_000);
        assert_eq!(by("datagram_records").max, 1_000);
        assert_eq!(by("datagram_records").p50, 30);
        // Published values are in the last minute too, and the local was reset.
        let lm = rep.histograms.iter().find(|h| h.name == "batch_time_us");
        assert_eq!(lm.map(|h| h.last_minute.count), Some(10));
        local.publish(t1);
        assert_eq!(hub.report(t1).histograms[0].since_start.count, 10);
    }

    #[test]
    fn flushes_are_per_backend_and_age_out_of_the_window() {
        let hub = HistogramHub::new(&["pg", "file"]);
        hub.record_flush(1, 2_000, Some(50_000));
        hub.record_flush(1, 3_000, None);
        hub.record_flush(7, 1, Some(1)); // unknown backend: its duration is ignored
        let now = Instant::now();
        let rep = hub.report(now);
        let flush: Vec<(Option<&str>, u64)> = rep
            .histograms
            .iter()
            .filter(|h| h.name == "flush_time_us")
            .map(|h| (h.backend.as_deref(), h.since_start.count))
            .collect();
        assert_eq!(flush, [(Some("pg"), 0), (Some("file"), 2)]);
        let ages: Vec<(Option<&str>, u64)> = rep
            .histograms
            .iter()
            .filter(|h| h.name == "commit_age_us")
            .map(|h| (h.backend.as_deref(), h.since_start.count))
            .collect();
        // Per backend; the unknown backend's age is ignored too.
        assert_eq!(ages, [(Some("pg"), 0), (Some("file"), 1)]);
        // Two minutes later the window is empty, since-start is not.
        let later = hub.report(now + Duration::from_secs(120));
        let age = later
            .histograms
            .iter()
            .find(|h| h.name == "commit_age_us" && h.backend.as_deref() == Some("file"));
        assert_eq!(
            age.map(|h| (h.last_minute.count, h.since_start.count)),
            Some((0, 1))
        );
    }

    #[test]
    fn flush_hook_records_an_age_per_row() {
        let hub = Arc::new(HistogramHub::new(&["flows"]));
        let hook = hub.flush_hook(0);
        hook(&FlushReport {
            backend: "flows",
            rows: 90,
            duration_us: 700,
            committed_us: 10_000_000,
            chunks: &[(9_000_000, 30), (9_500_000, 60), (10_000_001, 0)],
        });
        let rep = hub.report(Instant::now());
        let get = |name: &str| {
            rep.histograms
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.since_start.clone())
                .unwrap_or_default()
        };
        let age = get("commit_age_us");
        // 30 rows 1 s old, 60 rows 0.5 s old; the empty chunk (received "after" the commit:
        // clock steps) adds nothing.
        assert_eq!((age.count, age.sum), (90, 30 * 1_000_000 + 60 * 500_000));
        assert_eq!((age.min, age.max), (500_000, 1_000_000));
        // Percentiles are exact to 2 significant digits (the spec's sigfig).
        assert!((500_000..=505_000).contains(&age.p50), "{}", age.p50);
        let flush = get("flush_time_us");
        assert_eq!((flush.count, flush.sum), (1, 700));
    }

    #[test]
    fn window_drops_old_slots_when_reused() {
        let mut w = Windowed::new(BATCH_DATAGRAMS);
        w.record(0, 5);
        w.record(3, 7);
        assert_eq!(w.last_minute(5).count(), 2);
        // Interval 6 reuses slot 0: the value from interval 0 leaves the window.
        w.record(6, 9);
        assert_eq!(w.last_minute(6).count(), 2);
        assert_eq!(w.last_minute(9).count(), 1);
        assert_eq!(w.since_start.count(), 3);
    }
}
