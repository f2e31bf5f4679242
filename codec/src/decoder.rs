//! The decoder: one per receive worker. It owns the template cache, the sampler tables and the
//! sequence trackers of the exporters that worker sees, and turns a datagram into record views.
//!
//! One walk serves both entry points: [`Decoder::decode`] hands each record to a callback, and
//! [`Decoder::decode_into`] copies each record's plan and packet context into a bump arena so a
//! whole batch of views can outlive the call (the arena only holds `Copy` types without Drop).
//! Fixed-length data sets are decoded by cutting the set into `chunks_exact(record_len)` with
//! one template lookup per set; variable-length ones are walked record by record.

use std::net::IpAddr;

use bumpalo::Bump;

use crate::UnixMicros;
use crate::error::DecodeError;
use crate::fields::OptionsPlan;
use crate::ipfix;
use crate::record::{FlowRecord, PacketContext, Plan, Slot, read_uint};
use crate::sampling::{SamplerOption, SamplerTable, Sampling, SamplingSource};
use crate::sequence::{SequenceDelta, SequenceTracker};
use crate::template::{
    FieldSpec, FxHashMap, Template, TemplateCache, TemplateKey, TemplateKind, TemplateLimits,
};
use crate::v5;
use crate::v9::{self, Sets, TemplateItem, V9Templates};

mod held;
mod nsel;
pub mod saved;

pub use held::{HELD_BYTES, HELD_BYTES_PER_TEMPLATE, HELD_MAX_AGE_SECS};
pub use nsel::{NSEL_CLOSED_KEEP_SECS, NSEL_CONNECTIONS, NSEL_IDLE_SECS};

/// Default bound on the exporters one decoder keeps per-exporter state for (ops snapshot,
/// sequence streams, sampler tables); datagrams of further exporters still decode, they are just
/// not tracked (counted in [`DecoderStats::exporters_untracked`]).
pub const EXPORTERS_MAX: usize = 16_384;
/// Default idle time after which an exporter's state (counters, sequence streams, sampler
/// tables) is forgotten.
pub const EXPORTER_IDLE_SECS: u64 = 3600;
/// Observation domains listed per exporter in the snapshot.
pub const DOMAINS_PER_EXPORTER_MAX: usize = 64;

/// Where the walk hands records: a run of whole records (borrowed from the datagram) that
/// share one plan, packet context and sampling, each `plan.record_len` bytes long (see
/// [`records_of`]). A fixed-length set of uniform sampling is one call, so the dynamic call
/// costs once per set and the receiver's per-record loop inlines its callback.
type Emit<'e, 'd> = dyn FnMut(&'d [u8], &Plan, &PacketContext, Sampling) + 'e;

/// The records of a run handed to [`Emit`]: `plan.record_len` bytes each (a plan without a
/// length takes the run as one record).
#[inline(always)]
fn records_of<'d>(run: &'d [u8], plan: &Plan) -> std::slice::ChunksExact<'d, u8> {
    let len = match usize::from(plan.record_len) {
        0 => run.len().max(1),
        n => n,
    };
    run.chunks_exact(len)
}

/// Decoder limits and timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Templates not refreshed for this long are dropped.
    pub template_ttl_secs: u64,
    /// Templates one exporter may hold across its domains.
    pub max_templates_per_exporter: usize,
    /// Templates all exporters together may hold.
    pub max_templates_total: usize,
    /// Fields one template may declare.
    pub max_fields_per_template: usize,
    /// Fields one exporter's templates may declare together.
    pub max_fields_per_exporter: usize,
    /// Fields all cached templates may declare together.
    pub max_fields_total: usize,
    /// Exporters with per-exporter state (see [`EXPORTERS_MAX`]).
    pub max_exporters: usize,
    /// Exporters silent for this long are forgotten by [`Decoder::expire_idle`].
    pub exporter_idle_secs: u64,
    /// Sampling rates from the collector's config for exporters that announce none.
    pub sampling: SamplingConfig,
    /// NSEL connections remembered for counter accounting (see `decoder/nsel.rs`; 0 turns
    /// the accounting off: every record's counters are stored as sent).
    pub max_nsel_connections: usize,
    /// Bytes of data sets held for their template, per decoder (see `decoder/held.rs`).
    pub held_bytes: usize,
    /// ... per (exporter, domain, template id).
    pub held_bytes_per_template: usize,
    /// Held sets older than this are dropped.
    pub held_max_age_secs: u64,
}

/// The `sampling:` setting: a rate per exporter address and a default, used for a record only
/// when the exporter announced no rate for it (v5 header 0, no options data, no in-record
/// field); the record's source is then `config`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SamplingConfig {
    pub default: Option<u32>,
    pub exporters: std::collections::BTreeMap<IpAddr, u32>,
}

impl SamplingConfig {
    /// The rate to use for `exporter`'s records of unknown sampling, if configured.
    #[inline]
    pub fn fallback(&self, exporter: IpAddr) -> Option<Sampling> {
        let rate = if self.exporters.is_empty() {
            self.default
        } else {
            self.exporters.get(&exporter).copied().or(self.default)
        }?;
        Some(Sampling {
            rate: rate.max(1),
            source: SamplingSource::Config,
        })
    }
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            template_ttl_secs: 1800,
            max_templates_per_exporter: 1024,
            max_templates_total: 65_536,
            max_fields_per_template: 512,
            max_fields_per_exporter: 65_536,
            max_fields_total: 1 << 22,
            max_exporters: EXPORTERS_MAX,
            exporter_idle_secs: EXPORTER_IDLE_SECS,
            sampling: SamplingConfig::default(),
            max_nsel_connections: NSEL_CONNECTIONS,
            held_bytes: HELD_BYTES,
            held_bytes_per_template: HELD_BYTES_PER_TEMPLATE,
            held_max_age_secs: HELD_MAX_AGE_SECS,
        }
    }
}

impl DecoderConfig {
    fn limits(&self) -> TemplateLimits {
        TemplateLimits {
            ttl_us: i64::try_from(self.template_ttl_secs.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX),
            max_per_exporter: self.max_templates_per_exporter,
            max_total: self.max_templates_total,
            max_fields_per_template: self.max_fields_per_template,
            max_fields_per_exporter: self.max_fields_per_exporter,
            max_fields_total: self.max_fields_total,
        }
    }
}

/// What one datagram yielded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatagramOutcome {
    /// 5, 9 or 10.
    pub version: u16,
    /// Flow records handed to the callback.
    pub records: u32,
    /// Data sets skipped because their template is not (yet) known. Their record count cannot
    /// be known without the template, so each such set counts once.
    pub records_without_template: u32,
    /// Templates (and options templates) learned or refreshed.
    pub templates: u32,
}

/// Counters over the decoder's life. Read them between batches; they only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecoderStats {
    pub datagrams: u64,
    pub records: u64,
    /// Data sets without a known template (see [`DatagramOutcome::records_without_template`]):
    /// the sets that could not be held, and held sets that expired or made room (held ones are
    /// counted when they leave unheld, not when they arrive).
    pub records_without_template: u64,
    /// Data sets held for their template (see `decoder/held.rs`).
    pub sets_held: u64,
    /// Records of held sets decoded once their template arrived.
    pub held_released_records: u64,
    /// Held sets dropped for age, and to make room for newer ones.
    pub held_expired_sets: u64,
    pub held_dropped_sets: u64,
    /// Bytes of those data sets (their bodies, without set headers).
    pub bytes_without_template: u64,
    /// Template records refused, all reasons (the three below).
    pub templates_rejected: u64,
    /// ... malformed (no fields, too many, zero-length records, ids below 256, bad scope
    /// counts, lengths past the set),
    pub templates_refused_malformed: u64,
    /// ... over the exporter's own bound,
    pub templates_refused_exporter_full: u64,
    /// ... no room could be made in the cache.
    pub templates_refused_cache_full: u64,
    /// Templates evicted (unused by data lately) to admit new ones.
    pub templates_evicted: u64,
    /// Templates withdrawn (IPFIX).
    pub templates_withdrawn: u64,
    /// Options data records read (sampling, system init time).
    pub options_records: u64,
    /// Data sets whose tail held a partial record (non-zero bytes too short for a record).
    pub records_truncated: u64,
    pub errors_truncated: u64,
    pub errors_unsupported_version: u64,
    pub errors_bad_length: u64,
    pub errors_bad_template: u64,
    /// Datagrams of exporters beyond [`DecoderConfig::max_exporters`] (decoded, not tracked).
    pub exporters_untracked: u64,
    /// Exporters forgotten after [`DecoderConfig::exporter_idle_secs`] of silence.
    pub exporters_expired: u64,
    /// Sequence units missing, summed over every stream (kept up to date per datagram; falls
    /// when a late datagram fills a gap, never when an exporter is forgotten).
    pub sequence_missing: u64,
    /// Sequence restarts, summed over every stream.
    pub sequence_resets: u64,
    /// NSEL records stored with counters other than sent (teardown totals minus what updates
    /// carried; see `decoder/nsel.rs`).
    pub nsel_adjusted_records: u64,
    /// NSEL connections forgotten to make room while open (their teardown then stores its
    /// full totals).
    pub nsel_connections_evicted: u64,
    /// NSEL connections forgotten for age (idle, or torn down long enough ago).
    pub nsel_connections_expired: u64,
}

impl DecoderStats {
    fn count_refusal(&mut self, r: crate::template::Refusal) {
        self.templates_rejected += 1;
        match r {
            crate::template::REFUSED_EXPORTER_FULL => self.templates_refused_exporter_full += 1,
            crate::template::REFUSED_CACHE_FULL => self.templates_refused_cache_full += 1,
            _ => self.templates_refused_malformed += 1,
        }
    }

    fn count_error(&mut self, e: &DecodeError) {
        match e {
            DecodeError::Truncated { .. } => self.errors_truncated += 1,
            DecodeError::UnsupportedVersion { .. } => self.errors_unsupported_version += 1,
            DecodeError::BadLength { .. } => self.errors_bad_length += 1,
            DecodeError::BadTemplate { .. } => self.errors_bad_template += 1,
        }
    }
}

/// Options state of one (exporter, observation domain).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DomainState {
    samplers: SamplerTable,
    /// systemInitTimeMilliseconds from options data.
    system_init_ms: Option<u64>,
}

/// What the decoder remembers about one exporter for the ops API.
#[derive(Clone, Debug, Default)]
struct ExporterState {
    datagrams: u64,
    records: u64,
    /// Bytes of its datagrams, and data sets of it skipped for want of their template.
    bytes: u64,
    no_template_sets: u64,
    errors: u64,
    last_seen_us: UnixMicros,
    /// Bit 0: v5, bit 1: v9, bit 2: IPFIX.
    versions: u8,
    domains: Vec<u32>,
    sampling: Sampling,
    /// Sequence accounting summed over the exporter's streams, kept per datagram.
    sequence: SequenceDelta,
    /// Changed since the last [`Decoder::take_exporter_changes`] (queued in `changed`).
    dirty: bool,
}

/// One exporter as the ops API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExporterSnapshot {
    pub address: IpAddr,
    pub domains: Vec<u32>,
    /// NetFlow versions seen (5, 9, 10).
    pub versions: Vec<u16>,
    pub datagrams: u64,
    pub records: u64,
    /// Bytes of the exporter's datagrams.
    pub bytes: u64,
    /// Data sets skipped because their template was not known (held sets count when they
    /// are decoded, not here).
    pub no_template_sets: u64,
    /// Datagrams that ended in a decode error.
    pub errors: u64,
    /// Sequence accounting summed over the exporter's domains.
    pub sequence_missing: u64,
    pub sequence_resets: u64,
    pub sequence_out_of_order: u64,
    pub last_seen_us: UnixMicros,
    /// The sampling of the exporter's most recent record.
    pub sampling: Sampling,
    /// Templates cached for the exporter.
    pub templates: usize,
}

/// One cached template as the ops API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateInfo {
    pub exporter: IpAddr,
    pub domain: u32,
    pub id: u16,
    pub kind: TemplateKind,
    pub fields: Vec<FieldSpec>,
    /// Element ids carried more than once (the last occurrence is read).
    pub repeated_ies: Vec<u16>,
    pub learned_us: UnixMicros,
    pub refreshed_us: UnixMicros,
    /// Seconds since the last refresh, at the `now` given to [`Decoder::templates`].
    pub age_secs: u64,
    /// Loaded from saved state at start and not re-announced since.
    pub restored: bool,
}

/// Internal progress of one datagram (also on the error path).
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    outcome: DatagramOutcome,
    domain: Option<u32>,
    sampling: Option<Sampling>,
    /// Whether the exporter has (or may get) per-exporter state: streams and sampler tables
    /// are only created for tracked exporters, so they are bounded and expire with it.
    tracked: bool,
    /// Decoding a held set: a set whose template is unknown is not held again.
    releasing: bool,
    sequence: SequenceDelta,
}

/// Decodes datagrams of any number of exporters. Not `Sync`: one per worker.
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    stats: DecoderStats,
    sequences: SequenceTracker,
    templates: TemplateCache,
    domains: FxHashMap<(IpAddr, u32), DomainState>,
    exporters: FxHashMap<IpAddr, ExporterState>,
    /// Data sets waiting for their template.
    held: held::Held,
    /// NSEL connection accounting.
    nsel: nsel::Nsel,
    /// Bumped whenever what [`Decoder::save`] returns changes other than by refresh times (a
    /// template learned, replaced or withdrawn, sampling or init time changed).
    generation: u64,
    /// Exporters changed, and forgotten, since the last [`Decoder::take_exporter_changes`].
    changed: Vec<IpAddr>,
    forgotten: Vec<IpAddr>,
}

/// Per-exporter changes since the last call of [`Decoder::take_exporter_changes`]: what a
/// mirror of [`Decoder::exporters`] needs to stay equal to it, in time proportional to the
/// traffic, never to the number of exporters held.
#[derive(Clone, Debug, Default)]
pub struct ExporterChanges {
    pub changed: Vec<ExporterSnapshot>,
    pub forgotten: Vec<IpAddr>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DecoderConfig::default())
    }
}

impl Decoder {
    pub fn new(config: DecoderConfig) -> Self {
        let limits = config.limits();
        let nsel = nsel::Nsel::new(config.max_nsel_connections);
        Decoder {
            nsel,
            config,
            stats: DecoderStats::default(),
            sequences: SequenceTracker::default(),
            templates: TemplateCache::new(limits),
            domains: FxHashMap::default(),
            exporters: FxHashMap::default(),
            generation: 0,
            held: held::Held::default(),
            changed: Vec::new(),
            forgotten: Vec::new(),
        }
    }

    /// Changes with every template learned, replaced or withdrawn and every change of sampling
    /// state (not with refreshes): the daemon saves its state when this moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Replaces the configured sampling rates (a reload): applies from the next datagram;
    /// templates and learned sampling state are kept.
    pub fn set_sampling(&mut self, sampling: SamplingConfig) {
        self.config.sampling = sampling;
    }

    pub fn stats(&self) -> &DecoderStats {
        &self.stats
    }

    /// NSEL connections remembered now (see `decoder/nsel.rs`).
    pub fn nsel_connections(&self) -> usize {
        self.nsel.len()
    }

    pub fn sequences(&self) -> &SequenceTracker {
        &self.sequences
    }

    pub fn template_cache(&self) -> &TemplateCache {
        &self.templates
    }

    /// Drops templates not refreshed within the TTL of `now` (lookups also drop them lazily).
    pub fn expire_templates(&mut self, now: UnixMicros) -> usize {
        self.templates.expire(now)
    }

    /// Every exporter this decoder tracks (up to [`DecoderConfig::max_exporters`]), by
    /// address. Walks them all: the daemon mirrors [`Decoder::take_exporter_changes`] instead.
    pub fn exporters(&self) -> Vec<ExporterSnapshot> {
        let mut out: Vec<ExporterSnapshot> = self
            .exporters
            .iter()
            .map(|(addr, e)| self.exporter_snapshot(*addr, e))
            .collect();
        out.sort_by_key(|s| s.address);
        out
    }

    /// Exporters tracked now.
    pub fn exporter_count(&self) -> usize {
        self.exporters.len()
    }

    /// One exporter's state, if tracked.
    pub fn exporter(&self, addr: IpAddr) -> Option<ExporterSnapshot> {
        self.exporters
            .get(&addr)
            .map(|e| self.exporter_snapshot(addr, e))
    }

    fn exporter_snapshot(&self, address: IpAddr, e: &ExporterState) -> ExporterSnapshot {
        ExporterSnapshot {
            address,
            domains: e.domains.clone(),
            versions: [(1u8, 5u16), (2, 9), (4, 10)]
                .iter()
                .filter(|(bit, _)| e.versions & bit != 0)
                .map(|&(_, v)| v)
                .collect(),
            datagrams: e.datagrams,
            records: e.records,
            bytes: e.bytes,
            no_template_sets: e.no_template_sets,
            errors: e.errors,
            sequence_missing: u64::try_from(e.sequence.missing).unwrap_or(0),
            sequence_resets: e.sequence.resets,
            sequence_out_of_order: e.sequence.out_of_order,
            last_seen_us: e.last_seen_us,
            sampling: e.sampling,
            templates: self.templates.count_for(address),
        }
    }

    /// The exporters that changed (a datagram arrived) and those forgotten since the last call.
    /// Costs the number of changes, not the number of exporters held.
    pub fn take_exporter_changes(&mut self) -> ExporterChanges {
        let changed = std::mem::take(&mut self.changed);
        let mut out = ExporterChanges {
            changed: Vec::with_capacity(changed.len()),
            forgotten: std::mem::take(&mut self.forgotten),
        };
        for addr in changed {
            if let Some(e) = self.exporters.get_mut(&addr) {
                e.dirty = false;
            }
            if let Some(e) = self.exporters.get(&addr) {
                out.changed.push(self.exporter_snapshot(addr, e));
            }
        }
        out
    }

    /// Forgets exporters silent for [`DecoderConfig::exporter_idle_secs`] at `now`, with their
    /// sequence streams and sampler tables. Returns how many. One pass over the exporters held
    /// (bounded by [`DecoderConfig::max_exporters`]); the daemon calls it every few seconds.
    pub fn expire_idle(&mut self, now: UnixMicros) -> usize {
        let idle_us = i64::try_from(self.config.exporter_idle_secs.saturating_mul(1_000_000))
            .unwrap_or(i64::MAX);
        // A bounded look at the NSEL connection ring (it also ages as connections arrive).
        self.nsel.expire(now, 4096);
        let before = self.exporters.len();
        let forgotten = &mut self.forgotten;
        self.exporters.retain(|addr, e| {
            let keep = now.saturating_sub(e.last_seen_us) <= idle_us;
            if !keep {
                forgotten.push(*addr);
            }
            keep
        });
        let n = before - self.exporters.len();
        if n > 0 {
            let exporters = &self.exporters;
            self.sequences.forget(|a| !exporters.contains_key(a));
            self.domains.retain(|(a, _), _| exporters.contains_key(a));
            self.stats.exporters_expired += n as u64;
        }
        n
    }

    /// Sequence streams followed now.
    pub fn stream_count(&self) -> usize {
        self.sequences.len()
    }

    /// Every cached template, ordered by exporter, domain and id.
    pub fn templates(&self, now: UnixMicros) -> Vec<TemplateInfo> {
        let mut out: Vec<TemplateInfo> = self
            .templates
            .iter()
            .map(|(k, t)| template_info(k, t, now))
            .collect();
        out.sort_by_key(|t| (t.exporter, t.domain, t.id));
        out
    }

    /// The templates that changed since the last call, each with its listing (`None`: no longer
    /// held). Costs the number of changes; see [`TemplateCache::take_changes`].
    pub fn take_template_changes(
        &mut self,
        now: UnixMicros,
    ) -> Vec<(TemplateKey, Option<TemplateInfo>)> {
        self.templates
            .take_changes()
            .into_iter()
            .map(|(k, t)| (k, t.map(|t| template_info(&k, t, now))))
            .collect()
    }

    /// Decodes one datagram from `exporter`, calling `on_record` for every flow record.
    /// Records handed out before an error stay handed out; the error is also counted in
    /// [`Decoder::stats`].
    pub fn decode<F>(
        &mut self,
        exporter: IpAddr,
        received_us: UnixMicros,
        datagram: &[u8],
        mut on_record: F,
    ) -> Result<DatagramOutcome, DecodeError>
    where
        F: FnMut(&FlowRecord<'_>),
    {
        // One closure for both walks: with a single call site, `on_record` is inlined into
        // it (two call sites cost the hot path a call and a record built in memory).
        let mut emit = |run: &[u8], plan: &Plan, ctx: &PacketContext, s: Sampling| {
            for rec in records_of(run, plan) {
                on_record(&FlowRecord::new(rec, plan, ctx, s));
            }
        };
        let mut o = self.decode_with(exporter, received_us, datagram, &mut emit);
        while let Some((key, ctx, bytes)) = self.take_released() {
            let n = self.decode_released(key, &ctx, &bytes, &mut emit);
            if let Ok(o) = o.as_mut() {
                o.records += n;
            }
        }
        if !self.nsel.rewritten.is_empty() {
            let mut rewritten = std::mem::take(&mut self.nsel.rewritten);
            for r in rewritten.drain(..) {
                emit(&r.bytes, &r.plan, &r.ctx, r.sampling);
            }
            self.nsel.rewritten = rewritten;
        }
        o
    }

    /// Like [`Decoder::decode`], but appends the records to `out`, their plans and packet
    /// contexts copied into `arena` (consecutive records share one copy), so the views live as
    /// long as the datagram and the arena.
    pub fn decode_into<'b>(
        &mut self,
        exporter: IpAddr,
        received_us: UnixMicros,
        datagram: &'b [u8],
        arena: &'b Bump,
        out: &mut bumpalo::collections::Vec<'b, FlowRecord<'b>>,
    ) -> Result<DatagramOutcome, DecodeError> {
        let mut last_plan: Option<&'b Plan> = None;
        let mut last_ctx: Option<&'b PacketContext> = None;
        let mut emit = |run: &'b [u8], plan: &Plan, ctx: &PacketContext, s: Sampling| {
            let p: &'b Plan = match last_plan {
                Some(p) if p == plan => p,
                // v5's static plan stays itself, so its records keep the fixed-offset reads.
                _ if std::ptr::eq(plan, &v5::V5_PLAN) => &v5::V5_PLAN,
                _ => arena.alloc(*plan),
            };
            let c: &'b PacketContext = match last_ctx {
                Some(c) if c == ctx => c,
                _ => arena.alloc(*ctx),
            };
            last_plan = Some(p);
            last_ctx = Some(c);
            for rec in records_of(run, p) {
                out.push(FlowRecord::new(rec, p, c, s));
            }
        };
        let mut o = self.decode_with(exporter, received_us, datagram, &mut emit);
        while let Some((key, ctx, bytes)) = self.take_released() {
            // Held bytes move into the arena, so their views live as long as the batch's.
            let bytes: &'b [u8] = arena.alloc_slice_copy(&bytes);
            let n = self.decode_released(key, &ctx, bytes, &mut emit);
            if let Ok(o) = o.as_mut() {
                o.records += n;
            }
        }
        // NSEL records with rewritten counters (copies) move into the arena too.
        if !self.nsel.rewritten.is_empty() {
            let mut rewritten = std::mem::take(&mut self.nsel.rewritten);
            for r in rewritten.drain(..) {
                emit(
                    arena.alloc_slice_copy(&r.bytes),
                    &r.plan,
                    &r.ctx,
                    r.sampling,
                );
            }
            self.nsel.rewritten = rewritten;
        }
        o
    }

    fn decode_with<'d>(
        &mut self,
        exporter: IpAddr,
        received_us: UnixMicros,
        datagram: &'d [u8],
        emit: &mut Emit<'_, 'd>,
    ) -> Result<DatagramOutcome, DecodeError> {
        self.stats.datagrams += 1;
        let mut p = Progress {
            tracked: self.exporters.contains_key(&exporter)
                || self.exporters.len() < self.config.max_exporters,
            ..Progress::default()
        };
        // Records of unknown sampling take the configured rate (one lookup per datagram).
        let fallback = self.config.sampling.fallback(exporter);
        let mut with_fallback = |b: &'d [u8], plan: &Plan, ctx: &PacketContext, s: Sampling| {
            let s = match fallback {
                Some(f) if s.source == SamplingSource::Unknown => f,
                _ => s,
            };
            emit(b, plan, ctx, s)
        };
        let emit: &mut Emit<'_, 'd> = if fallback.is_some() {
            &mut with_fallback
        } else {
            emit
        };
        let result = match datagram {
            [0, 5, ..] => self.decode_v5(exporter, received_us, datagram, &mut p, emit),
            [0, 9, ..] => self.decode_v9(exporter, received_us, datagram, &mut p, emit),
            [0, 10, ..] => self.decode_ipfix(exporter, received_us, datagram, &mut p, emit),
            [a, b, ..] => Err(DecodeError::UnsupportedVersion {
                version: u16::from_be_bytes([*a, *b]),
            }),
            _ => Err(DecodeError::Truncated { what: "version" }),
        };
        let o = p.outcome;
        self.stats.nsel_adjusted_records = self.nsel.adjusted;
        self.stats.nsel_connections_evicted = self.nsel.evicted;
        self.stats.nsel_connections_expired = self.nsel.expired;
        self.stats.records += u64::from(o.records);
        self.stats.records_without_template += u64::from(o.records_without_template);
        if let Err(e) = &result {
            self.stats.count_error(e);
        }
        if o.version != 0 {
            self.note_exporter(exporter, received_us, &p, datagram.len(), result.is_err());
        }
        result.map(|()| o)
    }

    /// Notes a sequence number (only for tracked exporters: their streams expire with them).
    fn observe_sequence(
        &mut self,
        p: &mut Progress,
        key: (IpAddr, u32, u16),
        seq: u32,
        units: Option<u32>,
    ) {
        if !p.tracked {
            return;
        }
        let d = self.sequences.observe(key.0, key.1, key.2, seq, units);
        p.sequence.add(d);
        let s = &mut self.stats;
        s.sequence_missing = u64::try_from(
            i64::try_from(s.sequence_missing)
                .unwrap_or(i64::MAX)
                .saturating_add(d.missing),
        )
        .unwrap_or(0);
        s.sequence_resets += d.resets;
    }

    fn note_exporter(
        &mut self,
        exporter: IpAddr,
        now: UnixMicros,
        p: &Progress,
        bytes: usize,
        failed: bool,
    ) {
        if !p.tracked {
            self.stats.exporters_untracked += 1;
            return;
        }
        let e = self.exporters.entry(exporter).or_default();
        if !e.dirty {
            e.dirty = true;
            self.changed.push(exporter);
        }
        e.sequence.add(p.sequence);
        e.datagrams += 1;
        e.records += u64::from(p.outcome.records);
        e.bytes += bytes as u64;
        e.no_template_sets += u64::from(p.outcome.records_without_template);
        e.errors += u64::from(failed);
        e.last_seen_us = e.last_seen_us.max(now);
        e.versions |= match p.outcome.version {
            5 => 1,
            9 => 2,
            _ => 4,
        };
        if let Some(d) = p.domain
            && !e.domains.contains(&d)
            && e.domains.len() < DOMAINS_PER_EXPORTER_MAX
        {
            e.domains.push(d);
        }
        if let Some(s) = p.sampling {
            e.sampling = s;
        }
    }

    fn decode_v5<'d>(
        &mut self,
        exporter: IpAddr,
        received_us: UnixMicros,
        datagram: &'d [u8],
        p: &mut Progress,
        emit: &mut Emit<'_, 'd>,
    ) -> Result<(), DecodeError> {
        let pkt = v5::parse(datagram)?;
        let h = pkt.header;
        let ctx = PacketContext {
            exporter,
            observation_domain: u32::from(h.engine_type) << 8 | u32::from(h.engine_id),
            version: 5,
            export_time_us: i64::from(h.unix_secs.get()) * 1_000_000
                + i64::from(h.unix_nsecs.get() / 1000),
            sys_uptime_ms: h.sys_uptime.get(),
            received_us,
            system_init_ms: None,
        };
        p.outcome.version = 5;
        p.domain = Some(ctx.observation_domain);
        let interval = pkt.sampling_interval();
        let sampling = if interval > 0 {
            Sampling {
                rate: interval,
                source: SamplingSource::V5Header,
            }
        } else {
            Sampling::default()
        };
        let count = pkt.count() as u32;
        self.observe_sequence(
            p,
            (exporter, ctx.observation_domain, 5),
            pkt.flow_sequence(),
            Some(count),
        );
        emit(pkt.records, &v5::V5_PLAN, &ctx, sampling);
        p.outcome.records = count;
        p.sampling = Some(sampling);
        Ok(())
    }

    fn decode_v9<'d>(
        &mut self,
        exporter: IpAddr,
        received_us: UnixMicros,
        datagram: &'d [u8],
        p: &mut Progress,
        emit: &mut Emit<'_, 'd>,
    ) -> Result<(), DecodeError> {
        let (h, body) = v9::parse_header(datagram)?;
        // 1-3 bytes after the header cannot be a FlowSet (padding lives inside FlowSets), and a
        // bare header announcing records lost them: either way the datagram is cut short.
        if body.len() < crate::wire::v9::SET_HEADER_LEN && (!body.is_empty() || h.count.get() > 0) {
            return Err(DecodeError::Truncated { what: "v9 flowset" });
        }
        let domain = h.source_id.get();
        let ctx = PacketContext {
            exporter,
            observation_domain: domain,
            version: 9,
            export_time_us: i64::from(h.unix_secs.get()) * 1_000_000,
            sys_uptime_ms: h.sys_uptime.get(),
            received_us,
            system_init_ms: None,
        };
        p.outcome.version = 9;
        p.domain = Some(domain);
        // v9 sequence numbers count export packets.
        self.observe_sequence(p, (exporter, domain, 9), h.sequence.get(), Some(1));
        for set in Sets::new(body) {
            let set = set?;
            match set.id {
                v9::TEMPLATE_SET_ID => {
                    for item in V9Templates::new(set.body, TemplateKind::Data) {
                        self.learn(exporter, domain, item?, received_us, p);
                    }
                }
                v9::OPTIONS_TEMPLATE_SET_ID => {
                    for item in V9Templates::new(set.body, TemplateKind::Options) {
                        self.learn(exporter, domain, item?, received_us, p);
                    }
                }
                id if id >= v9::DATA_SET_ID_MIN => {
                    self.data_set(id, set.body, &ctx, p, emit);
                }
                _ => {} // Reserved FlowSet ids: skipped by their length.
            }
        }
        Ok(())
    }

    fn decode_ipfix<'d>(
        &mut self,
        exporter: IpAddr,
        received_us: UnixMicros,
        datagram: &'d [u8],
        p: &mut Progress,
        emit: &mut Emit<'_, 'd>,
    ) -> Result<(), DecodeError> {
        let (h, body) = ipfix::parse_header(datagram)?;
        let domain = h.observation_domain.get();
        let mut ctx = PacketContext {
            exporter,
            observation_domain: domain,
            version: 10,
            export_time_us: i64::from(h.export_time.get()) * 1_000_000,
            sys_uptime_ms: 0,
            received_us,
            system_init_ms: self
                .domains
                .get(&(exporter, domain))
                .and_then(|d| d.system_init_ms),
        };
        p.outcome.version = 10;
        p.domain = Some(domain);
        // IPFIX sequence numbers count data records (options data included); if a set could
        // not be counted (unknown template), the stream resynchronises on the next message.
        let mut units = Some(0u32);
        let result = (|| {
            for set in Sets::new(body) {
                let set = set?;
                match set.id {
                    ipfix::TEMPLATE_SET_ID => {
                        for item in ipfix::IpfixTemplates::new(set.body, TemplateKind::Data) {
                            self.learn(exporter, domain, item?, received_us, p);
                        }
                    }
                    ipfix::OPTIONS_TEMPLATE_SET_ID => {
                        for item in ipfix::IpfixTemplates::new(set.body, TemplateKind::Options) {
                            self.learn(exporter, domain, item?, received_us, p);
                        }
                    }
                    id if id >= ipfix::DATA_SET_ID_MIN => {
                        let n = self.data_set(id, set.body, &ctx, p, emit);
                        units = match (units, n) {
                            (Some(u), Some(n)) => Some(u.wrapping_add(n)),
                            _ => None,
                        };
                        // Options data may have announced the system init time.
                        if ctx.system_init_ms.is_none() {
                            ctx.system_init_ms = self
                                .domains
                                .get(&(exporter, domain))
                                .and_then(|d| d.system_init_ms);
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })();
        let units = if result.is_ok() { units } else { None };
        self.observe_sequence(p, (exporter, domain, 10), h.sequence.get(), units);
        result
    }

    fn learn(
        &mut self,
        exporter: IpAddr,
        domain: u32,
        item: TemplateItem<'_>,
        now: UnixMicros,
        p: &mut Progress,
    ) {
        match item {
            TemplateItem::Define(def) => {
                match self.templates.learn(exporter, domain, &def, now) {
                    Ok(learned) => {
                        p.outcome.templates += 1;
                        if learned != crate::template::Learned::Refreshed {
                            self.generation += 1;
                        }
                        let key = TemplateKey {
                            exporter,
                            domain,
                            id: def.id,
                        };
                        if !self.held.release.contains(&key) && self.held.holds(&key) {
                            self.held.release.push(key);
                        }
                    }
                    Err(r) => self.stats.count_refusal(r),
                }
                self.stats.templates_evicted = self.templates.evicted();
            }
            TemplateItem::Withdraw { id, kind } => {
                let all_id = match kind {
                    TemplateKind::Data => ipfix::TEMPLATE_SET_ID,
                    TemplateKind::Options => ipfix::OPTIONS_TEMPLATE_SET_ID,
                };
                let n = if id == all_id {
                    self.templates.withdraw_all(exporter, domain, kind)
                } else {
                    usize::from(self.templates.withdraw(exporter, domain, id))
                };
                self.stats.templates_withdrawn += n as u64;
                self.generation += n as u64;
            }
            TemplateItem::Refused(r) => self.stats.count_refusal(r),
        }
    }

    /// Decodes one data set; returns the data records it held (flow and options), or `None`
    /// if its template is unknown.
    fn data_set<'d>(
        &mut self,
        id: u16,
        body: &'d [u8],
        ctx: &PacketContext,
        p: &mut Progress,
        emit: &mut Emit<'_, 'd>,
    ) -> Option<u32> {
        let key = TemplateKey {
            exporter: ctx.exporter,
            domain: ctx.observation_domain,
            id,
        };
        let Some(t) = self.templates.get(&key, ctx.received_us) else {
            if p.releasing || !self.hold(key, body, ctx) {
                p.outcome.records_without_template += 1;
                self.stats.bytes_without_template += body.len() as u64;
            }
            return None;
        };
        let (n, tail) = match t.kind {
            TemplateKind::Data => {
                let table = self
                    .domains
                    .get(&(ctx.exporter, ctx.observation_domain))
                    .map(|d| &d.samplers);
                let (n, tail, last) = data_records(t, body, ctx, table, &mut self.nsel, emit);
                p.outcome.records += n;
                if last.is_some() {
                    p.sampling = last;
                }
                (n, tail)
            }
            TemplateKind::Options => {
                let key = (ctx.exporter, ctx.observation_domain);
                if !self.domains.contains_key(&key)
                    && (!p.tracked || self.domains.len() >= self.config.max_exporters)
                {
                    return Some(0);
                }
                let dom = self.domains.entry(key).or_default();
                let before = dom.clone();
                let (n, tail) = options_records(t, body, dom);
                if *dom != before {
                    self.generation += 1;
                }
                self.stats.options_records += u64::from(n);
                (n, tail)
            }
        };
        // What is left is padding (zeros) or a record cut short.
        if tail.iter().any(|&b| b != 0) {
            self.stats.records_truncated += 1;
        }
        Some(n)
    }
}

fn template_info(k: &TemplateKey, t: &Template, now: UnixMicros) -> TemplateInfo {
    TemplateInfo {
        exporter: k.exporter,
        domain: k.domain,
        id: k.id,
        kind: t.kind,
        fields: t.fields().to_vec(),
        repeated_ies: t.repeated_ies().to_vec(),
        learned_us: t.learned_us,
        refreshed_us: t.refreshed_us,
        age_secs: u64::try_from(now.saturating_sub(t.refreshed_us) / 1_000_000).unwrap_or(0),
        restored: t.restored,
    }
}

/// Decodes the flow records of one data set. Returns how many, the unread tail, and the
/// sampling of the last record.
#[inline]
fn data_records<'d>(
    t: &Template,
    body: &'d [u8],
    ctx: &PacketContext,
    table: Option<&SamplerTable>,
    nsel: &mut nsel::Nsel,
    emit: &mut Emit<'_, 'd>,
) -> (u32, &'d [u8], Option<Sampling>) {
    let mut n = 0u32;
    let mut last = None;
    if !t.is_variable() {
        let plan = t.plan();
        let per_record = plan.sampler_id.is_present() || plan.sampling_interval.is_present();
        let stateful = plan.is_connection_events();
        let set_sampling = table
            .map(SamplerTable::default_sampling)
            .unwrap_or_default();
        let chunks = body.chunks_exact(usize::from(plan.record_len));
        let tail = chunks.remainder();
        let families = t.family_plans();
        if !per_record && !stateful && families.is_none() {
            // The common case: the whole set in one call.
            n = chunks.len() as u32;
            if n > 0 {
                emit(&body[..body.len() - tail.len()], plan, ctx, set_sampling);
                last = Some(set_sampling);
            }
            return (n, tail, last);
        }
        for rec in chunks {
            let s = if per_record {
                record_sampling(rec, plan, table)
            } else {
                set_sampling
            };
            // Both address families in the template: one branch per record picks the plan
            // that reads the record's family.
            let p = match families {
                Some([v4, v6]) => {
                    if plan.record_is_v6(rec) {
                        v6
                    } else {
                        v4
                    }
                }
                None => plan,
            };
            if !(stateful && nsel.account(rec, p, ctx, s)) {
                emit(rec, p, ctx, s);
            }
            last = Some(s);
            n += 1;
        }
        return (n, tail, last);
    }
    let mut rest = body;
    while rest.len() >= usize::from(t.min_len()) {
        let Some((plan, _)) = t.walk(rest) else { break };
        let Some((rec, tail)) = rest.split_at_checked(usize::from(plan.record_len)) else {
            break;
        };
        let s = record_sampling(rec, &plan, table);
        let plan = plan.for_family(plan.record_is_v6(rec));
        if !(plan.is_connection_events() && nsel.account(rec, &plan, ctx, s)) {
            emit(rec, &plan, ctx, s);
        }
        last = Some(s);
        n += 1;
        rest = tail;
    }
    (n, rest, last)
}

#[inline]
fn record_sampling(rec: &[u8], plan: &Plan, table: Option<&SamplerTable>) -> Sampling {
    let in_record = read_uint(rec, plan.sampling_interval);
    let sampler = read_uint(rec, plan.sampler_id);
    match table {
        Some(t) => t.resolve(in_record, sampler),
        None => SamplerTable::default().resolve(in_record, sampler),
    }
}

/// Reads the options data records of one set into the domain's state.
fn options_records<'d>(t: &Template, body: &'d [u8], dom: &mut DomainState) -> (u32, &'d [u8]) {
    let mut n = 0u32;
    let mut rest = body;
    while rest.len() >= usize::from(t.min_len()) {
        let plan: OptionsPlan = if t.is_variable() {
            match t.walk(rest) {
                Some((_, o)) => o,
                None => break,
            }
        } else {
            *t.options_plan()
        };
        let Some((rec, tail)) = rest.split_at_checked(usize::from(plan.record_len)) else {
            break;
        };
        let read = |s: Slot| read_uint(rec, s);
        dom.samplers.learn(&SamplerOption {
            sampler_id: read(plan.sampler_id),
            interval: read(plan.interval),
            random_interval: read(plan.random_interval),
            packet_interval: read(plan.packet_interval),
            packet_space: read(plan.packet_space),
            time_interval: read(plan.time_interval),
            time_space: read(plan.time_space),
            algorithm: read(plan.algorithm),
            size: read(plan.size),
            population: read(plan.population),
            probability: read_float(rec, plan.probability),
        });
        if let Some(init) = read(plan.system_init) {
            dom.system_init_ms = Some(init);
        }
        n += 1;
        rest = tail;
    }
    (n, rest)
}

/// An IEEE float32 or float64 at `slot` (samplingProbability 311).
fn read_float(rec: &[u8], slot: Slot) -> Option<f64> {
    let bits = read_uint(rec, slot)?;
    match slot.len {
        4 => Some(f64::from(f32::from_bits(bits as u32))),
        8 => Some(f64::from_bits(bits)),
        _ => None,
    }
}

/// Reads every accessor of `r` and folds the values into one number, so a caller that
/// `black_box`es it keeps every read. Benches, round-trip tests and fuzz targets use it to visit
/// every schema column of every record.
#[inline]
pub fn visit(r: &FlowRecord<'_>) -> u64 {
    let ip = |a: Option<IpAddr>| match a {
        Some(IpAddr::V4(v4)) => u64::from(u32::from(v4)),
        Some(IpAddr::V6(v6)) => (u128::from(v6) as u64) ^ 6,
        None => 1,
    };
    let n = |v: Option<u64>| v.unwrap_or(u64::MAX);
    let mut h = r.time_received() as u64;
    h = h.wrapping_add(r.first_switched() as u64);
    h = h.wrapping_add(r.last_switched() as u64);
    h ^= ip(Some(r.exporter()));
    h = h.wrapping_add(u64::from(r.observation_domain()));
    h = h.wrapping_add(u64::from(r.sampling_rate()));
    h ^= ip(r.src_ip());
    h ^= ip(r.dst_ip()).rotate_left(7);
    h ^= ip(r.next_hop()).rotate_left(13);
    h = h.wrapping_add(n(r.src_port().map(u64::from)));
    h = h.wrapping_add(n(r.dst_port().map(u64::from)));
    h = h.wrapping_add(n(r.protocol().map(u64::from)));
    h = h.wrapping_add(n(r.in_bytes()));
    h = h.wrapping_add(n(r.in_pkts()));
    h = h.wrapping_add(n(r.tcp_flags().map(u64::from)));
    h = h.wrapping_add(n(r.tos().map(u64::from)));
    h = h.wrapping_add(n(r.input_if().map(u64::from)));
    h = h.wrapping_add(n(r.output_if().map(u64::from)));
    h = h.wrapping_add(n(r.src_as().map(u64::from)));
    h = h.wrapping_add(n(r.dst_as().map(u64::from)));
    h = h.wrapping_add(n(r.src_mask().map(u64::from)));
    h = h.wrapping_add(n(r.dst_mask().map(u64::from)));
    h = h.wrapping_add(n(r.direction().map(u64::from)));
    h = h.wrapping_add(n(r.ip_version().map(u64::from)));
    h
}

/// Decodes one datagram and [`visit`]s every record; returns the outcome and the folded
/// values. The fuzz targets and the hostile-input tests call exactly this.
pub fn decode_visiting(
    decoder: &mut Decoder,
    exporter: IpAddr,
    received_us: UnixMicros,
    datagram: &[u8],
) -> Result<(DatagramOutcome, u64), DecodeError> {
    let mut h = 0u64;
    let o = decoder.decode(exporter, received_us, datagram, |r| {
        h = h.wrapping_add(visit(r));
    })?;
    Ok((o, h))
}

/// Feeds a byte stream to one decoder as a sequence of datagrams, each framed as: 1 byte
/// exporter selector (low 2 bits pick one of four exporters), 1 byte receive-time step in
/// seconds, 2 bytes big-endian length, then that many bytes. A frame cut short ends the
/// stream. The template-then-data fuzz target and its tests use it. A second decoder takes the
/// arena path ([`Decoder::decode_into`]) over the same datagrams; the returned count of
/// datagrams on which the two paths disagreed must be 0.
pub fn decode_stream(stream: &[u8], config: DecoderConfig) -> (DecoderStats, u64) {
    const EXPORTERS: [IpAddr; 4] = [
        IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)),
        IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)),
    ];
    let mut callback = Decoder::new(config.clone());
    let mut arena_decoder = Decoder::new(config);
    let mut arena = Bump::new();
    let mut now: UnixMicros = 1_700_000_000_000_000;
    let mut disagreements = 0u64;
    let mut rest = stream;
    while let [sel, step, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some((datagram, tail)) = tail.split_at_checked(len) else {
            break;
        };
        rest = tail;
        now += i64::from(*step) * 1_000_000;
        let exporter = EXPORTERS[usize::from(sel & 3)];
        let a = decode_visiting(&mut callback, exporter, now, datagram);
        {
            let mut out = bumpalo::collections::Vec::new_in(&arena);
            let b = arena_decoder.decode_into(exporter, now, datagram, &arena, &mut out);
            let hb = out.iter().fold(0u64, |h, r| h.wrapping_add(visit(r)));
            if a != b.map(|o| (o, hb)) {
                disagreements += 1;
            }
        }
        arena.reset();
    }
    (callback.stats().clone(), disagreements)
}

/// Decodes `data` as one datagram of `version` (its first two bytes become the version; for
/// IPFIX the header's length field becomes the datagram's length), first with a fresh decoder
/// and then again with the same decoder, which has now learned the datagram's templates, so
/// data sets are decoded too. Returns the records of the second pass. The v5, v9 and IPFIX fuzz
/// targets call exactly this.
pub fn decode_as_version(version: u16, data: &[u8]) -> u32 {
    let mut datagram = data.to_vec();
    if let Some(v) = datagram.get_mut(0..2) {
        v.copy_from_slice(&version.to_be_bytes());
    }
    if version == 10 {
        let len = u16::try_from(datagram.len()).unwrap_or(u16::MAX);
        if let Some(l) = datagram.get_mut(2..4) {
            l.copy_from_slice(&len.to_be_bytes());
        }
    }
    let exporter = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    let mut d = Decoder::default();
    let now = 1_700_000_000_000_000;
    let _ = decode_visiting(&mut d, exporter, now, &datagram);
    decode_visiting(&mut d, exporter, now + 1, &datagram).map_or(0, |(o, _)| o.records)
}

/// Frames `datagrams` for [`decode_stream`]: exporter 0, one second apart.
pub fn frame_stream<'a>(datagrams: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        let len = u16::try_from(d.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(d.get(..usize::from(len)).unwrap_or(d));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::encode::{
        FieldSpec, IPFIX_TYPICAL_V4_TEMPLATE, IpfixBuilder, IpfixHeader, TYPICAL_V4_TEMPLATE,
        V5Builder, V5Header, V9Builder, V9Header, sample_flow_v4, sample_flow_v6,
    };

    const E: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
    const T0: i64 = 1_700_000_000_000_000;
    const SECS: u32 = 1_700_000_000;

    fn v9(seq: u32, build: impl FnOnce(&mut V9Builder) -> bool) -> Vec<u8> {
        let mut b = V9Builder::new(V9Header {
            sys_uptime_ms: 3_600_000,
            unix_secs: SECS,
            sequence: seq,
            source_id: 3,
        });
        assert!(build(&mut b));
        let mut out = Vec::new();
        b.finish(&mut out);
        out
    }

    fn ipfix(seq: u32, build: impl FnOnce(&mut IpfixBuilder) -> bool) -> Vec<u8> {
        let mut b = IpfixBuilder::new(IpfixHeader {
            export_time: SECS,
            sequence: seq,
            observation_domain: 4,
        });
        assert!(build(&mut b));
        let mut out = Vec::new();
        b.finish(&mut out);
        out
    }

    fn count(d: &mut Decoder, now: i64, p: &[u8]) -> Result<(u32, u32), DecodeError> {
        d.decode(E, now, p, |_| {})
            .map(|o| (o.records, o.records_without_template))
    }

    fn v9_data(seq: u32, n: u32) -> Vec<u8> {
        v9(seq, |b| {
            (0..n).all(|i| b.data(256, TYPICAL_V4_TEMPLATE, &sample_flow_v4(i)).is_ok())
        })
    }

    #[test]
    fn templates_expire_after_the_ttl_of_receive_time() {
        let mut d = Decoder::new(DecoderConfig {
            template_ttl_secs: 60,
            ..DecoderConfig::default()
        });
        let t = v9(1, |b| b.template(256, TYPICAL_V4_TEMPLATE).is_ok());
        assert_eq!(count(&mut d, T0, &t), Ok((0, 0)));
        assert_eq!(count(&mut d, T0 + 60_000_000, &v9_data(2, 3)), Ok((3, 0)));
        // Expired: the data set is held for the template (not counted as lost yet) ...
        assert_eq!(count(&mut d, T0 + 60_000_001, &v9_data(3, 3)), Ok((0, 0)));
        assert_eq!(d.template_cache().expired(), 1);
        assert_eq!(d.held().1, 1);
        // ... and decoded when it is re-announced; the refresh moves the deadline.
        assert_eq!(count(&mut d, T0 + 100_000_000, &t), Ok((3, 0)));
        assert_eq!(count(&mut d, T0 + 150_000_000, &v9_data(4, 1)), Ok((1, 0)));
        assert_eq!(d.expire_templates(T0 + 161_000_000), 1);
    }

    #[test]
    fn reannounced_template_replaces_the_layout() {
        let mut d = Decoder::default();
        let short = [FieldSpec::new(8, 4), FieldSpec::new(1, 4)];
        let t1 = v9(1, |b| b.template(256, &short).is_ok());
        assert!(count(&mut d, T0, &t1).is_ok());
        let t2 = v9(2, |b| b.template(256, TYPICAL_V4_TEMPLATE).is_ok());
        assert!(count(&mut d, T0, &t2).is_ok());
        let mut got = Vec::new();
        let r = d.decode(E, T0, &v9_data(3, 2), |r| {
            got.push((r.src_ip(), r.in_pkts()))
        });
        assert!(r.is_ok());
        let fl = sample_flow_v4(1);
        assert_eq!(got.get(1), Some(&(Some(fl.src_ip), Some(fl.packets))));
        assert_eq!(d.templates(T0).len(), 1);
    }

    #[test]
    fn snapshot_and_template_listing() {
        let mut d = Decoder::default();
        let mut b5 = V5Builder::new(V5Header {
            unix_secs: SECS,
            flow_sequence: 0,
            engine_id: 1,
            sampling_interval: 0x4000 | 50,
            ..V5Header::default()
        });
        assert!(b5.push(&sample_flow_v4(0)).is_ok());
        let mut p5 = Vec::new();
        b5.finish(&mut p5);
        assert_eq!(count(&mut d, T0, &p5), Ok((1, 0)));
        let t = v9(1, |b| b.template(256, TYPICAL_V4_TEMPLATE).is_ok());
        assert!(count(&mut d, T0 + 1, &t).is_ok());
        assert!(count(&mut d, T0 + 2, &v9_data(2, 4)).is_ok());
        assert!(count(&mut d, T0 + 3, &v9_data(5, 4)).is_ok()); // packets 3 and 4 lost
        let snap = d.exporters();
        let [s] = snap.as_slice() else {
            panic!("{snap:?}");
        };
        assert_eq!(s.address, E);
        assert_eq!(s.versions, vec![5, 9]);
        assert_eq!(s.domains, vec![1, 3]);
        assert_eq!((s.datagrams, s.records, s.errors), (4, 9, 0));
        assert_eq!(s.sequence_missing, 2);
        assert_eq!(s.last_seen_us, T0 + 3);
        assert_eq!(s.templates, 1);
        // The last record came from v9 without sampling options: unknown.
        assert_eq!(s.sampling, Sampling::default());
        let list = d.templates(T0 + 10_000_001);
        let [ti] = list.as_slice() else {
            panic!("{list:?}");
        };
        assert_eq!((ti.exporter, ti.domain, ti.id), (E, 3, 256));
        assert_eq!(ti.kind, TemplateKind::Data);
        assert_eq!(ti.fields.len(), TYPICAL_V4_TEMPLATE.len());
        assert_eq!(ti.fields.first().map(|f| f.id), Some(8));
        assert_eq!(ti.age_secs, 10);
    }

    #[test]
    fn ipfix_sequence_counts_data_records() {
        let mut d = Decoder::default();
        let t = ipfix(0, |b| b.template(256, IPFIX_TYPICAL_V4_TEMPLATE).is_ok());
        assert!(count(&mut d, T0, &t).is_ok());
        let data = |seq, n| {
            ipfix(seq, |b| {
                (0..n).all(|i| {
                    b.data(256, IPFIX_TYPICAL_V4_TEMPLATE, &sample_flow_v4(i))
                        .is_ok()
                })
            })
        };
        assert!(count(&mut d, T0, &data(0, 5)).is_ok());
        assert!(count(&mut d, T0, &data(5, 5)).is_ok());
        assert!(count(&mut d, T0, &data(17, 5)).is_ok()); // 7 records lost
        let s = d.sequences().stream(E, 4, 10).copied().unwrap_or_default();
        assert_eq!((s.missing, s.expected), (7, 22));
    }

    #[test]
    fn ipfix_options_carry_system_init_time_and_selector_rates() {
        let mut d = Decoder::default();
        let boot_ms = (u64::from(SECS) - 7200) * 1000;
        let scope = [FieldSpec::new(302, 4)];
        let opts = [
            FieldSpec::new(305, 4),
            FieldSpec::new(306, 4),
            FieldSpec::new(160, 8),
        ];
        let data_fields = [
            FieldSpec::new(8, 4),
            FieldSpec::new(302, 4),
            FieldSpec::new(22, 4),
            FieldSpec::new(21, 4),
        ];
        let p = ipfix(0, |b| {
            b.options_template(300, &scope, &opts).is_ok()
                && b.template(301, &data_fields).is_ok()
                && b.options_data(
                    300,
                    &[scope[0], opts[0], opts[1], opts[2]],
                    &[7, 1, 31, boot_ms],
                )
                .is_ok()
        });
        assert!(count(&mut d, T0, &p).is_ok());
        let mut fl = sample_flow_v4(0);
        fl.sampler_id = 7;
        fl.first_uptime_ms = 1000;
        fl.last_uptime_ms = 2000;
        let mut other = fl;
        other.sampler_id = 8;
        let p = ipfix(1, |b| {
            b.data(301, &data_fields, &fl).is_ok() && b.data(301, &data_fields, &other).is_ok()
        });
        let mut got = Vec::new();
        let r = d.decode(E, T0, &p, |r| {
            got.push((r.sampling(), r.first_switched(), r.last_switched()))
        });
        assert!(r.is_ok());
        let boot_us = boot_ms as i64 * 1000;
        let s = |rate, source| Sampling { rate, source };
        assert_eq!(
            got,
            vec![
                (
                    s(32, SamplingSource::Sampler),
                    boot_us + 1_000_000,
                    boot_us + 2_000_000
                ),
                // Unknown selector id, no default: unknown.
                (
                    Sampling::default(),
                    boot_us + 1_000_000,
                    boot_us + 2_000_000
                ),
            ]
        );
        assert_eq!(d.stats().options_records, 1);
    }

    #[test]
    fn decode_into_keeps_views_in_the_arena() {
        let mut d = Decoder::default();
        let t = v9(1, |b| b.template(256, TYPICAL_V4_TEMPLATE).is_ok());
        let packets = [t, v9_data(2, 3), v9_data(3, 2)];
        let arena = Bump::new();
        let mut out = bumpalo::collections::Vec::new_in(&arena);
        for p in &packets {
            assert!(d.decode_into(E, T0, p, &arena, &mut out).is_ok());
        }
        assert_eq!(out.len(), 5);
        let fl = sample_flow_v4(1);
        assert_eq!(out.get(1).and_then(|r| r.src_ip()), Some(fl.src_ip));
        assert_eq!(out.get(4).and_then(|r| r.in_bytes()), Some(fl.bytes));
        // One plan and one context per datagram, shared by its records.
        let same = |a: usize, b: usize| match (out.get(a), out.get(b)) {
            (Some(x), Some(y)) => std::ptr::eq(x.plan(), y.plan()),
            _ => false,
        };
        assert!(same(0, 2));
        assert!(!same(2, 3));
    }

    /// Decodes `p` and returns what `f` reads from every record.
    fn read_all<T>(d: &mut Decoder, p: &[u8], f: impl Fn(&FlowRecord<'_>) -> T) -> Vec<T> {
        let mut out = Vec::new();
        let r = d.decode(E, T0, p, |r| out.push(f(r)));
        assert!(r.is_ok(), "{r:?}");
        out
    }

    #[test]
    fn mixed_family_template_picks_the_family_per_record() {
        use std::net::Ipv6Addr;
        // IOS-XR "any" monitor: both address families and both next hops in one template;
        // per record one family is filled, the other is zeros.
        let fields = [
            FieldSpec::new(8, 4),
            FieldSpec::new(12, 4),
            FieldSpec::new(27, 16),
            FieldSpec::new(28, 16),
            FieldSpec::new(15, 4),
            FieldSpec::new(62, 16),
            FieldSpec::new(9, 1),
            FieldSpec::new(29, 1),
            FieldSpec::new(1, 8),
        ];
        let with_version: Vec<FieldSpec> = fields
            .iter()
            .copied()
            .chain([FieldSpec::new(60, 1)])
            .collect();
        let v4 = sample_flow_v4(1);
        let v6 = sample_flow_v6(2);
        let mut v4_zero_src = v4;
        v4_zero_src.src_ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED); // DHCP discover: 0.0.0.0 -> x
        let p = ipfix(0, |b| {
            b.template(400, &fields).is_ok()
                && b.template(401, &with_version).is_ok()
                && [v4, v6, v4_zero_src]
                    .iter()
                    .all(|fl| b.data(400, &fields, fl).is_ok())
                && [v4, v6]
                    .iter()
                    .all(|fl| b.data(401, &with_version, fl).is_ok())
        });
        let mut d = Decoder::default();
        let got = read_all(&mut d, &p, |r| {
            (
                r.src_ip(),
                r.dst_ip(),
                r.next_hop(),
                r.src_mask(),
                r.ip_version(),
                r.src_ip_bytes().map(<[u8]>::len),
            )
        });
        let want = |fl: &crate::encode::Flow| {
            (
                Some(fl.src_ip),
                Some(fl.dst_ip),
                Some(fl.next_hop),
                Some(fl.src_mask),
                Some(if fl.src_ip.is_ipv4() { 4 } else { 6 }),
                Some(if fl.src_ip.is_ipv4() { 4 } else { 16 }),
            )
        };
        assert_eq!(
            got,
            vec![
                want(&v4),
                want(&v6),
                want(&v4_zero_src),
                want(&v4),
                want(&v6)
            ]
        );
        // The arena path reads the same (each record keeps its family's plan).
        let mut d2 = Decoder::default();
        let arena = Bump::new();
        let mut out = bumpalo::collections::Vec::new_in(&arena);
        assert!(d2.decode_into(E, T0, &p, &arena, &mut out).is_ok());
        let from_arena: Vec<_> = out.iter().map(|r| (r.src_ip(), r.ip_version())).collect();
        let from_callback: Vec<_> = got.iter().map(|g| (g.0, g.4)).collect();
        assert_eq!(from_arena, from_callback);
        // A record whose ipVersion says 6 reads the IPv6 slots even if IPv4 ones are set.
        let mut odd = v6;
        odd.src_ip = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let p = ipfix(5, |b| b.data(401, &with_version, &odd).is_ok());
        let got = read_all(&mut d, &p, |r| (r.src_ip(), r.ip_version(), r.etype()));
        assert_eq!(
            got,
            vec![(
                Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
                Some(6),
                Some(0x86dd)
            )]
        );
    }

    #[test]
    fn repeated_element_reads_the_last_occurrence_and_is_listed() {
        // Huawei VXLAN: the outer header's addresses, ports and protocol (zeros here), then
        // the inner flow's.
        let fields = [
            FieldSpec::new(8, 4),
            FieldSpec::new(12, 4),
            FieldSpec::new(7, 2),
            FieldSpec::new(4, 1),
            FieldSpec::new(1, 4),
            FieldSpec::new(8, 4),
            FieldSpec::new(12, 4),
            FieldSpec::new(7, 2),
            FieldSpec::new(4, 1),
        ];
        let p = v9(1, |b| {
            b.template(300, &fields).is_ok()
                && b.options_data(
                    300,
                    &fields,
                    &[0, 0, 0, 0, 1234, 0x0a00_0001, 0x0a00_0002, 5555, 17],
                )
                .is_ok()
        });
        let mut d = Decoder::default();
        let got = read_all(&mut d, &p, |r| {
            (
                r.src_ip(),
                r.dst_ip(),
                r.src_port(),
                r.protocol(),
                r.in_bytes(),
            )
        });
        assert_eq!(
            got,
            vec![(
                Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
                Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
                Some(5555),
                Some(17),
                Some(1234)
            )]
        );
        let list = d.templates(T0);
        assert_eq!(list.len(), 1);
        assert_eq!(
            list.first().map(|t| t.repeated_ies.clone()),
            Some(vec![8, 12, 7, 4])
        );
    }

    #[test]
    fn operator_fields_from_v9_and_ipfix() {
        let fields = [
            FieldSpec::new(8, 4),
            FieldSpec::new(12, 4),
            FieldSpec::new(4, 1),
            FieldSpec::new(1, 8),
            FieldSpec::new(32, 2),
            FieldSpec::new(58, 2),
            FieldSpec::new(59, 2),
            FieldSpec::new(56, 6),
            FieldSpec::new(80, 6),
            FieldSpec::new(70, 3),
            FieldSpec::new(18, 4),
            FieldSpec::new(225, 4),
            FieldSpec::new(226, 4),
            FieldSpec::new(227, 2),
            FieldSpec::new(228, 2),
            FieldSpec::new(234, 4),
            FieldSpec::new(235, 4),
            FieldSpec::new(136, 1),
            FieldSpec::new(89, 1),
        ];
        let mut fl = sample_flow_v4(3);
        fl.protocol = 1;
        fl.icmp_type = 3;
        fl.icmp_code = 13;
        fl.vlan = 100;
        fl.post_vlan = 200;
        fl.src_mac = [0x00, 0x1b, 0x21, 0xaa, 0xbb, 0xcc];
        fl.dst_mac = [0x02, 0, 0, 0, 0, 0x01];
        fl.mpls_label = 0xabcde;
        fl.bgp_next_hop = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        fl.post_nat_src_ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
        fl.post_nat_dst_ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 8));
        fl.post_nat_src_port = 40_000;
        fl.post_nat_dst_port = 8443;
        fl.ingress_vrf = 11;
        fl.egress_vrf = 12;
        fl.flow_end_reason = 2;
        fl.forwarding_status = 0x40;
        let read = |r: &FlowRecord<'_>| {
            (
                (r.icmp_type(), r.icmp_code(), r.vlan(), r.post_vlan()),
                (r.src_mac(), r.dst_mac(), r.mpls_label(), r.bgp_next_hop()),
                (r.post_nat_src_ip(), r.post_nat_dst_ip()),
                (r.post_nat_src_port(), r.post_nat_dst_port()),
                (r.ingress_vrf(), r.egress_vrf()),
                (r.flow_end_reason(), r.forwarding_status(), r.etype()),
            )
        };
        let want = (
            (Some(3), Some(13), Some(100), Some(200)),
            (
                Some(fl.src_mac),
                Some(fl.dst_mac),
                Some(0xabcde),
                Some(fl.bgp_next_hop),
            ),
            (Some(fl.post_nat_src_ip), Some(fl.post_nat_dst_ip)),
            (Some(40_000), Some(8443)),
            (Some(11), Some(12)),
            (Some(2), Some(0x40), Some(0x0800)),
        );
        let p9 = v9(1, |b| {
            b.template(310, &fields).is_ok() && b.data(310, &fields, &fl).is_ok()
        });
        let pf = ipfix(0, |b| {
            b.template(310, &fields).is_ok() && b.data(310, &fields, &fl).is_ok()
        });
        let mut d = Decoder::default();
        assert_eq!(read_all(&mut d, &p9, read), vec![want]);
        assert_eq!(read_all(&mut d, &pf, read), vec![want]);
        // No ICMP element: ICMP flows carry type and code in the destination port.
        let mut b5 = V5Builder::new(V5Header {
            unix_secs: SECS,
            ..V5Header::default()
        });
        let mut icmp = sample_flow_v4(0);
        icmp.protocol = 1;
        icmp.dst_port = 0x0800; // echo request
        assert!(b5.push(&icmp).is_ok());
        let mut p5 = Vec::new();
        b5.finish(&mut p5);
        let got = read_all(&mut d, &p5, |r| {
            (
                r.icmp_type(),
                r.icmp_code(),
                r.vlan(),
                r.src_mac(),
                r.etype(),
            )
        });
        assert_eq!(got, vec![(Some(8), Some(0), None, None, Some(0x0800))]);
    }

    #[test]
    fn rfc5477_options_with_and_without_305() {
        // IOS-XR: options scoped by selectorId (302) with selectorAlgorithm 3 and 1 out of
        // 256 (309/310); sampler 1 also sends samplingPacketInterval 1, sampler 2 does not.
        let scope = [FieldSpec::new(302, 4)];
        let with_305 = [
            FieldSpec::new(304, 2),
            FieldSpec::new(309, 4),
            FieldSpec::new(310, 4),
            FieldSpec::new(305, 4),
        ];
        let without = [
            FieldSpec::new(304, 2),
            FieldSpec::new(309, 4),
            FieldSpec::new(310, 4),
        ];
        let all = |o: &[FieldSpec]| -> Vec<FieldSpec> { scope.iter().chain(o).copied().collect() };
        let data_fields = [FieldSpec::new(8, 4), FieldSpec::new(302, 4)];
        let mut d = Decoder::default();
        let p = ipfix(0, |b| {
            b.options_template(300, &scope, &with_305).is_ok()
                && b.options_template(301, &scope, &without).is_ok()
                && b.template(400, &data_fields).is_ok()
                && b.options_data(300, &all(&with_305), &[1, 3, 1, 256, 1])
                    .is_ok()
                && b.options_data(301, &all(&without), &[2, 3, 1, 1000])
                    .is_ok()
        });
        assert!(count(&mut d, T0, &p).is_ok());
        let mut a = sample_flow_v4(0);
        a.sampler_id = 1;
        let mut b2 = a;
        b2.sampler_id = 2;
        let p = ipfix(3, |b| {
            b.data(400, &data_fields, &a).is_ok() && b.data(400, &data_fields, &b2).is_ok()
        });
        let s = |rate| Sampling {
            rate,
            source: SamplingSource::Sampler,
        };
        assert_eq!(
            read_all(&mut d, &p, |r| r.sampling()),
            vec![s(256), s(1000)]
        );
        // One sampler announced and no id in the data records: that sampler's rate.
        let mut d = Decoder::default();
        let p = ipfix(0, |b| {
            b.options_template(300, &scope, &with_305).is_ok()
                && b.template(401, &data_fields[..1]).is_ok()
                && b.options_data(300, &all(&with_305), &[1, 3, 1, 256, 1])
                    .is_ok()
                && b.data(401, &data_fields[..1], &a).is_ok()
        });
        assert_eq!(read_all(&mut d, &p, |r| r.sampling()), vec![s(256)]);
    }

    #[test]
    fn configured_sampling_applies_only_where_the_exporter_says_nothing() {
        let mut exporters = std::collections::BTreeMap::new();
        exporters.insert(E, 1000);
        let mut d = Decoder::new(DecoderConfig {
            sampling: SamplingConfig {
                default: Some(10),
                exporters,
            },
            ..DecoderConfig::default()
        });
        let v5 = |interval| {
            let mut b = V5Builder::new(V5Header {
                unix_secs: SECS,
                sampling_interval: interval,
                ..V5Header::default()
            });
            assert!(b.push(&sample_flow_v4(0)).is_ok());
            let mut out = Vec::new();
            b.finish(&mut out);
            out
        };
        let s = |rate, source| Sampling { rate, source };
        assert_eq!(
            read_all(&mut d, &v5(0), |r| r.sampling()),
            vec![s(1000, SamplingSource::Config)]
        );
        assert_eq!(
            read_all(&mut d, &v5(0x4000 | 64), |r| r.sampling()),
            vec![s(64, SamplingSource::V5Header)]
        );
        // Another exporter: the default.
        let mut got = Vec::new();
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77));
        assert!(
            d.decode(other, T0, &v5(0), |r| got.push(r.sampling()))
                .is_ok()
        );
        assert_eq!(got, vec![s(10, SamplingSource::Config)]);
    }

    #[test]
    fn nsel_connection_with_updates_sums_every_byte_once() {
        // ASA with flow-update export: create (no bytes), two updates at timer (deltas), the
        // teardown (totals) and its "update at teardown" (the last interval) after it, in
        // another datagram; plus a short connection that ends before any update (teardown
        // only) and a denied flow. SUM over what is stored = the bytes of both connections.
        let fields = [
            FieldSpec::new(148, 4),
            FieldSpec::new(8, 4),
            FieldSpec::new(12, 4),
            FieldSpec::new(4, 1),
            FieldSpec::new(233, 1),
            FieldSpec::new(323, 8),
            FieldSpec::new(231, 4),
            FieldSpec::new(232, 4),
            FieldSpec::new(298, 4),
            FieldSpec::new(299, 4),
        ];
        let ev = |conn: u64, event: u8, fwd: u64, rev: u64| {
            let mut fl = sample_flow_v4(conn as u32);
            fl.connection_id = conn;
            fl.fw_event = event;
            fl.bytes = fwd;
            fl.out_bytes = rev;
            fl.packets = fwd / 100;
            fl.out_pkts = rev / 100;
            fl
        };
        let first = [
            ev(7, 1, 0, 0),
            ev(7, 5, 1000, 20_000),
            ev(9, 2, 300, 4000), // short connection: teardown only
            ev(7, 5, 500, 10_000),
            ev(8, 3, 0, 0), // denied
            ev(7, 2, 1800, 36_000),
        ];
        let late = [ev(7, 5, 300, 6000)]; // update at teardown, after the teardown
        let p1 = v9(1, |b| {
            b.template(263, &fields).is_ok()
                && first.iter().all(|f| b.data(263, &fields, f).is_ok())
        });
        let p2 = v9(2, |b| late.iter().all(|f| b.data(263, &fields, f).is_ok()));
        let sums = |rows: &[(u64, u64, u64, u64)]| {
            rows.iter().fold((0, 0, 0, 0), |a, r| {
                (a.0 + r.0, a.1 + r.1, a.2 + r.2, a.3 + r.3)
            })
        };
        let read = |r: &FlowRecord<'_>| {
            (
                r.in_bytes().unwrap_or(0),
                r.out_bytes().unwrap_or(0),
                r.in_pkts().unwrap_or(0),
                r.out_pkts().unwrap_or(0),
            )
        };
        // Connection 7 carried 1800 / 36000 bytes, 9 carried 300 / 4000.
        let want = (2100, 40_000, 21, 400);
        let mut d = Decoder::default();
        let mut rows = read_all(&mut d, &p1, read);
        rows.extend(read_all(&mut d, &p2, read));
        assert_eq!(rows.len(), 7, "every event is stored");
        assert_eq!(sums(&rows), want);
        // The teardown stored what the updates left (1800 - 1500), the late update nothing.
        assert!(rows.contains(&(300, 6000, 3, 60)));
        assert_eq!(rows.last(), Some(&(0, 0, 0, 0)));
        assert_eq!(d.stats().nsel_adjusted_records, 2);
        assert_eq!(d.nsel_connections(), 1, "only the connection with updates");
        // The arena path stores the same.
        let mut d = Decoder::default();
        let arena = Bump::new();
        let mut out = bumpalo::collections::Vec::new_in(&arena);
        assert!(d.decode_into(E, T0, &p1, &arena, &mut out).is_ok());
        assert!(d.decode_into(E, T0, &p2, &arena, &mut out).is_ok());
        let rows: Vec<_> = out.iter().map(read).collect();
        assert_eq!(sums(&rows), want);
        // The update at teardown before the teardown: the teardown then stores 0.
        let mut d = Decoder::default();
        let p3 = v9(1, |b| {
            b.template(263, &fields).is_ok()
                && [
                    ev(7, 5, 1500, 30_000),
                    ev(7, 5, 300, 6000),
                    ev(7, 2, 1800, 36_000),
                ]
                .iter()
                .all(|f| b.data(263, &fields, f).is_ok())
        });
        let rows = read_all(&mut d, &p3, read);
        assert_eq!(sums(&rows), (1800, 36_000, 18, 360));
        // Accounting off (0 connections): every record as sent.
        let mut d = Decoder::new(DecoderConfig {
            max_nsel_connections: 0,
            ..DecoderConfig::default()
        });
        let mut rows = read_all(&mut d, &p1, read);
        rows.extend(read_all(&mut d, &p2, read));
        assert_eq!(sums(&rows), (3900, 76_000, 39, 760));
    }

    #[test]
    fn nsel_teardown_record() {
        // Cisco ASA v9 flow teardown: no octetDeltaCount; initiator/responder counters,
        // NF_F_FW_EVENT (233) = 2 (deleted), event time 323 and flow start 152.
        let fields = [
            FieldSpec::new(148, 4),
            FieldSpec::new(8, 4),
            FieldSpec::new(7, 2),
            FieldSpec::new(12, 4),
            FieldSpec::new(11, 2),
            FieldSpec::new(4, 1),
            FieldSpec::new(233, 1),
            FieldSpec::new(323, 8),
            FieldSpec::new(152, 8),
            FieldSpec::new(231, 4),
            FieldSpec::new(232, 4),
            FieldSpec::new(298, 8),
            FieldSpec::new(299, 8),
        ];
        let mut fl = sample_flow_v4(4);
        fl.connection_id = 77;
        fl.fw_event = 2;
        fl.bytes = 5000;
        fl.out_bytes = 120_000;
        fl.packets = 40;
        fl.out_pkts = 90;
        let p = v9(1, |b| {
            b.template(263, &fields).is_ok() && b.data(263, &fields, &fl).is_ok()
        });
        let mut d = Decoder::default();
        let got = read_all(&mut d, &p, |r| {
            (
                (r.in_bytes(), r.out_bytes(), r.in_pkts(), r.out_pkts()),
                (r.fw_event(), r.connection_id()),
                (r.first_switched(), r.last_switched()),
            )
        });
        assert_eq!(
            got,
            vec![(
                (Some(5000), Some(120_000), Some(40), Some(90)),
                (Some(2), Some(77)),
                (
                    fl.first_unix_ms as i64 * 1000,
                    fl.last_unix_ms as i64 * 1000
                ),
            )]
        );
    }
}
