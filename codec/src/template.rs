//! The template cache and template compilation. Templates are keyed by (exporter address,
//! observation domain / source id, template id) — never by source port, which changes when an
//! exporter restarts. A re-announced template replaces the old one, an IPFIX withdrawal removes it,
//! and one not refreshed within the TTL expires (checked against the datagram's receive time, so
//! the cache stays sans-I/O). The cache is bounded per exporter and in total, on templates and on
//! fields; a refused template is reported to the caller, which counts it.
//!
//! A template compiles once into a [`Plan`] (data templates) or an [`OptionsPlan`] (options
//! templates). Fixed-length templates hand out that plan for every record; templates with
//! variable-length fields (IPFIX length 65535) are walked per record, building a per-record plan
//! on the stack.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use crate::UnixMicros;
use crate::fields::{OptionsPlan, PlanBuilder, VARIABLE_LENGTH};
use crate::record::{AddrMode, Plan};

/// One field of a template as announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// Element id (enterprise bit cleared).
    pub id: u16,
    /// Length in bytes; [`VARIABLE_LENGTH`] for IPFIX variable-length fields.
    pub len: u16,
    /// Private enterprise number; 0 for IANA elements.
    pub enterprise: u32,
}

/// Data or options template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    Data,
    Options,
}

/// A template record as parsed from the wire, fields not yet copied out.
#[derive(Clone, Copy, Debug)]
pub struct TemplateDef<'a> {
    pub id: u16,
    pub kind: TemplateKind,
    /// Scope fields at the start of `fields` (options templates only).
    pub scope_count: u16,
    pub field_count: u16,
    /// IPFIX encoding (enterprise bit, variable length) vs NetFlow v9.
    pub ipfix: bool,
    /// Exactly the bytes of the field specifiers.
    pub raw: &'a [u8],
}

impl<'a> TemplateDef<'a> {
    /// The field specifiers. `raw` was sized by the parser, so this yields `field_count` items.
    pub fn fields(&self) -> FieldIter<'a> {
        FieldIter {
            raw: self.raw,
            ipfix: self.ipfix,
        }
    }
}

/// Iterates field specifiers: 4 bytes each (v9), or 4 plus 4 when the enterprise bit is set.
#[derive(Clone, Debug)]
pub struct FieldIter<'a> {
    raw: &'a [u8],
    ipfix: bool,
}

impl Iterator for FieldIter<'_> {
    type Item = FieldSpec;

    fn next(&mut self) -> Option<FieldSpec> {
        let (head, rest) = self.raw.split_first_chunk::<4>()?;
        let id = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]);
        if self.ipfix && id & 0x8000 != 0 {
            let (pen, rest) = rest.split_first_chunk::<4>()?;
            self.raw = rest;
            Some(FieldSpec {
                id: id & 0x7fff,
                len,
                enterprise: u32::from_be_bytes(*pen),
            })
        } else {
            self.raw = rest;
            Some(FieldSpec {
                id,
                len,
                enterprise: 0,
            })
        }
    }
}

/// A compiled template.
#[derive(Clone, Debug)]
pub struct Template {
    pub id: u16,
    pub kind: TemplateKind,
    pub scope_count: u16,
    pub ipfix: bool,
    fields: Box<[FieldSpec]>,
    /// Fixed templates: the plan for every record. Variable ones: unused (see [`Template::walk`]).
    plan: Plan,
    /// Mixed-family fixed templates: `plan` read as IPv4 and as IPv6 ([`Plan::for_family`]),
    /// the plans records are handed out with. `None` for every other template.
    families: Option<Box<[Plan; 2]>>,
    options: OptionsPlan,
    variable: bool,
    /// Element ids that appear more than once among the template's (non-scope) fields; the
    /// last occurrence is the one read (see [`crate::fields`]).
    repeated: Box<[u16]>,
    /// The fewest bytes a record can take (fixed: its length; variable: fixed parts plus one
    /// length byte per variable field). Never 0.
    min_len: u16,
    pub learned_us: UnixMicros,
    pub refreshed_us: UnixMicros,
    /// Loaded from saved state at start (see `decoder::saved`) and not re-announced since.
    pub restored: bool,
    /// Changed since the last [`TemplateCache::take_changes`] (its key is queued).
    dirty: bool,
    /// A data set used it since the eviction clock last passed it (second chance).
    used: bool,
    /// Insertion number: tells this template's entry in the eviction ring from a stale one.
    seq: u64,
}

/// Why a template was refused.
pub type Refusal = &'static str;

/// The exporter already holds [`TemplateLimits::max_per_exporter`] templates (or its fields
/// bound): refused, so one exporter cannot crowd out the others.
pub const REFUSED_EXPORTER_FULL: Refusal = "exporter's template bound reached";
/// No room could be made (the field bound with nothing evictable).
pub const REFUSED_CACHE_FULL: Refusal = "cache full";

impl Template {
    /// Compiles a template definition. Refuses templates without fields, whose records take
    /// zero bytes, longer than a set can be, or with more fields than `max_fields`.
    pub fn compile(
        def: &TemplateDef<'_>,
        max_fields: usize,
        now: UnixMicros,
    ) -> Result<Template, Refusal> {
        if def.field_count == 0 {
            return Err("no fields");
        }
        if usize::from(def.field_count) > max_fields {
            return Err("too many fields");
        }
        let fields: Box<[FieldSpec]> = def.fields().collect();
        if fields.len() != usize::from(def.field_count) {
            return Err("field count");
        }
        let mut variable = false;
        let mut min_len: u32 = 0;
        // Zero-length fields occupy nothing (Cisco sends v9 options scope "System" with
        // length 0); only a record of zero bytes is refused, as it could never advance.
        for f in fields.iter() {
            if def.ipfix && f.len == VARIABLE_LENGTH {
                variable = true;
                min_len += 1;
            } else {
                min_len += u32::from(f.len);
            }
        }
        // A record must fit a set (16-bit length, minus the set header).
        if min_len == 0 {
            return Err("zero-length records");
        }
        let min_len = u16::try_from(min_len)
            .ok()
            .filter(|&l| l <= u16::MAX - 4)
            .ok_or("record longer than a set")?;
        let mut t = Template {
            id: def.id,
            kind: def.kind,
            scope_count: def.scope_count,
            ipfix: def.ipfix,
            fields,
            plan: Plan::EMPTY,
            families: None,
            options: OptionsPlan::default(),
            variable,
            repeated: Box::default(),
            min_len,
            learned_us: now,
            refreshed_us: now,
            restored: false,
            dirty: false,
            used: false,
            seq: 0,
        };
        t.repeated = repeated_ies(&t.fields, if def.ipfix { 0 } else { def.scope_count });
        if !variable {
            let mut b = PlanBuilder::default();
            let mut o = OptionsPlan::default();
            let mut offset = 0u16;
            for (i, f) in t.fields.iter().enumerate() {
                t.note(i, f, offset, f.len, &mut b, &mut o);
                offset += f.len;
            }
            t.plan = b.finish(min_len);
            if t.plan.addr_mode != AddrMode::Single {
                t.families = Some(Box::new([
                    t.plan.for_family(false),
                    t.plan.for_family(true),
                ]));
            }
            o.record_len = min_len;
            t.options = o;
        }
        Ok(t)
    }

    /// Whether a field at index `i` is an element (v9 options scope fields are not).
    #[inline]
    fn note(
        &self,
        i: usize,
        f: &FieldSpec,
        offset: u16,
        len: u16,
        b: &mut PlanBuilder,
        o: &mut OptionsPlan,
    ) {
        let v9_scope = !self.ipfix && i < usize::from(self.scope_count);
        if v9_scope {
            return;
        }
        match self.kind {
            TemplateKind::Data => b.field(f.id, f.enterprise, offset, len),
            TemplateKind::Options => o.field(f.id, f.enterprise, offset, len),
        }
    }

    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    pub fn is_variable(&self) -> bool {
        self.variable
    }

    /// Element ids the template carries more than once (empty for most templates).
    pub fn repeated_ies(&self) -> &[u16] {
        &self.repeated
    }

    /// The fewest bytes a record takes (never 0).
    pub fn min_len(&self) -> u16 {
        self.min_len
    }

    /// The fixed plan (meaningful for fixed-length data templates).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// A mixed-family fixed template's IPv4 and IPv6 plans (see [`Plan::for_family`]).
    pub fn family_plans(&self) -> Option<&[Plan; 2]> {
        self.families.as_deref()
    }

    /// The fixed options plan (meaningful for fixed-length options templates).
    pub fn options_plan(&self) -> &OptionsPlan {
        &self.options
    }

    /// Walks one variable-length record at the start of `bytes`: returns its plan (with
    /// `record_len` = the bytes it took) and options plan, or `None` if the record does not fit.
    pub fn walk(&self, bytes: &[u8]) -> Option<(Plan, OptionsPlan)> {
        let mut b = PlanBuilder::default();
        let mut o = OptionsPlan::default();
        let mut pos = 0usize;
        for (i, f) in self.fields.iter().enumerate() {
            let len = if f.len == VARIABLE_LENGTH {
                let first = *bytes.get(pos)?;
                pos += 1;
                if first < 255 {
                    usize::from(first)
                } else {
                    let l = bytes.get(pos..pos + 2)?;
                    pos += 2;
                    usize::from(u16::from_be_bytes([l[0], l[1]]))
                }
            } else {
                usize::from(f.len)
            };
            let end = pos + len;
            if end > bytes.len() {
                return None;
            }
            let offset = u16::try_from(pos).ok()?;
            let len16 = u16::try_from(len).ok()?;
            self.note(i, f, offset, len16, &mut b, &mut o);
            pos = end;
        }
        let record_len = u16::try_from(pos).ok()?;
        o.record_len = record_len;
        Some((b.finish(record_len), o))
    }

    fn same_fields(&self, def: &TemplateDef<'_>) -> bool {
        self.kind == def.kind
            && self.ipfix == def.ipfix
            && self.scope_count == def.scope_count
            && self.fields.len() == usize::from(def.field_count)
            && self.fields.iter().copied().eq(def.fields())
    }
}

/// The ids (enterprise elements skipped) that occur more than once after the first `skip`
/// fields (v9 options scope fields are not elements), in order of their first repeat.
fn repeated_ies(fields: &[FieldSpec], skip: u16) -> Box<[u16]> {
    let fields = fields.get(usize::from(skip)..).unwrap_or_default();
    let mut out: Vec<u16> = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        if f.enterprise == 0
            && !out.contains(&f.id)
            && fields[..i]
                .iter()
                .any(|g| g.id == f.id && g.enterprise == 0)
        {
            out.push(f.id);
        }
    }
    out.into_boxed_slice()
}

/// Cache key: never the source port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    pub exporter: IpAddr,
    pub domain: u32,
    pub id: u16,
}

/// Bounds and lifetime of cached templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateLimits {
    pub ttl_us: i64,
    pub max_per_exporter: usize,
    pub max_total: usize,
    pub max_fields_per_template: usize,
    pub max_fields_per_exporter: usize,
    pub max_fields_total: usize,
}

/// What `learn` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    New,
    /// Same fields as the cached one: only its refresh time moved.
    Refreshed,
    /// Different fields under the same key: replaced.
    Replaced,
}

/// Templates and fields one exporter holds.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    templates: usize,
    fields: usize,
}

/// A small fast hasher (FxHash) for the per-set cache lookup; keys come from the network, but
/// the cache is bounded, so a flooding exporter can only slow its own lookups.
#[derive(Clone, Copy, Debug, Default)]
pub struct FxHasher {
    hash: u64,
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The template cache of one decoder.
///
/// When the cache is full a new template takes the place of one that no data set used lately:
/// a CLOCK (second-chance) sweep over the templates in insertion order, where a lookup for a
/// data set sets the template's `used` bit and the sweep clears it once before evicting. So a
/// flood of templates that nothing refers to (spoofed sources) evicts its own kind, never the
/// templates real exporters' data uses, and a new exporter is always admitted. Amortised O(1)
/// per admission; the hot path only sets a bit.
#[derive(Debug)]
pub struct TemplateCache {
    map: FxHashMap<TemplateKey, Template>,
    usage: FxHashMap<IpAddr, Usage>,
    total_fields: usize,
    limits: TemplateLimits,
    expired: u64,
    /// Keys learned, refreshed, replaced or removed since the last [`TemplateCache::take_changes`].
    changed: Vec<TemplateKey>,
    /// The eviction clock: keys in insertion order with their insertion number (entries of
    /// removed or replaced templates are skipped when met, and compacted away).
    ring: VecDeque<(TemplateKey, u64)>,
    next_seq: u64,
    evicted: u64,
}

impl TemplateCache {
    pub fn new(limits: TemplateLimits) -> Self {
        TemplateCache {
            map: FxHashMap::default(),
            usage: FxHashMap::default(),
            total_fields: 0,
            limits,
            expired: 0,
            changed: Vec::new(),
            ring: VecDeque::new(),
            next_seq: 0,
            evicted: 0,
        }
    }

    /// Templates evicted to make room for new ones so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Evicts the template the clock finds unused (clearing `used` bits as it passes). Returns
    /// whether one was evicted. At most two passes: after one, every bit is clear.
    fn evict_one(&mut self) -> bool {
        let mut budget = self.ring.len().saturating_mul(2).saturating_add(1);
        while budget > 0 {
            budget -= 1;
            let Some((key, seq)) = self.ring.pop_front() else {
                return false;
            };
            match self.map.get_mut(&key) {
                Some(t) if t.seq == seq => {
                    if t.used {
                        t.used = false;
                        self.ring.push_back((key, seq));
                    } else {
                        self.remove(&key);
                        self.evicted += 1;
                        return true;
                    }
                }
                _ => {} // Stale: removed or replaced since.
            }
        }
        false
    }

    /// The keys that changed since the last call (learned, refreshed, replaced, withdrawn,
    /// expired), each with its template if it is still held. Costs the number of changes, not
    /// the number of templates: the daemon's ops mirror is kept with it.
    pub fn take_changes(&mut self) -> Vec<(TemplateKey, Option<&Template>)> {
        let keys = std::mem::take(&mut self.changed);
        for k in &keys {
            if let Some(t) = self.map.get_mut(k) {
                t.dirty = false;
            }
        }
        keys.into_iter().map(|k| (k, self.map.get(&k))).collect()
    }

    pub fn limits(&self) -> &TemplateLimits {
        &self.limits
    }

    /// Templates held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Templates dropped for age so far.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// Templates one exporter holds.
    pub fn count_for(&self, exporter: IpAddr) -> usize {
        self.usage.get(&exporter).map_or(0, |u| u.templates)
    }

    /// Learns (or refreshes, or replaces) a template announced at `now`.
    pub fn learn(
        &mut self,
        exporter: IpAddr,
        domain: u32,
        def: &TemplateDef<'_>,
        now: UnixMicros,
    ) -> Result<Learned, Refusal> {
        let key = TemplateKey {
            exporter,
            domain,
            id: def.id,
        };
        // The common case: an exporter re-sends the same template every few packets.
        if let Some(t) = self.map.get_mut(&key)
            && t.same_fields(def)
        {
            t.refreshed_us = now;
            t.restored = false;
            if !t.dirty {
                t.dirty = true;
                self.changed.push(key);
            }
            return Ok(Learned::Refreshed);
        }
        let t = Template::compile(def, self.limits.max_fields_per_template, now)?;
        let n = t.fields.len();
        let usage = self.usage.get(&exporter).copied().unwrap_or_default();
        let (old_templates, old_fields) =
            self.map.get(&key).map_or((0, 0), |o| (1, o.fields.len()));
        // The exporter's own bound: refused (a replacement frees its old slot first).
        if usage.templates - old_templates >= self.limits.max_per_exporter
            || usage.fields - old_fields + n > self.limits.max_fields_per_exporter
        {
            return Err(REFUSED_EXPORTER_FULL);
        }
        let old = self.remove(&key);
        // The total bounds: make room from what no data set used lately.
        while self.map.len() >= self.limits.max_total
            || self.total_fields + n > self.limits.max_fields_total
        {
            if !self.evict_one() {
                return Err(REFUSED_CACHE_FULL);
            }
        }
        self.insert(key, t);
        Ok(if old.is_some() {
            Learned::Replaced
        } else {
            Learned::New
        })
    }

    fn insert(&mut self, key: TemplateKey, mut t: Template) {
        let n = t.fields.len();
        t.dirty = true;
        self.changed.push(key);
        t.seq = self.next_seq;
        self.next_seq += 1;
        self.ring.push_back((key, t.seq));
        let u = self.usage.entry(key.exporter).or_default();
        u.templates += 1;
        u.fields += n;
        self.total_fields += n;
        self.map.insert(key, t);
        // Stale ring entries (removed templates) are dropped when the ring is twice the cache.
        if self.ring.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.ring
                .retain(|(k, seq)| map.get(k).is_some_and(|t| t.seq == *seq));
        }
    }

    fn remove(&mut self, key: &TemplateKey) -> Option<Template> {
        let t = self.map.remove(key)?;
        if !t.dirty {
            self.changed.push(*key);
        }
        let n = t.fields.len();
        if let Some(u) = self.usage.get_mut(&key.exporter) {
            u.templates = u.templates.saturating_sub(1);
            u.fields = u.fields.saturating_sub(n);
            if u.templates == 0 {
                self.usage.remove(&key.exporter);
            }
        }
        self.total_fields = self.total_fields.saturating_sub(n);
        Some(t)
    }

    /// Puts back a template saved by an earlier run, with its saved learn and refresh times
    /// (so the TTL counts from the exporter's last announcement, not from the restart), under
    /// the same bounds as [`TemplateCache::learn`]. One not refreshed within the TTL of `now`
    /// is not restored.
    pub fn restore(
        &mut self,
        exporter: IpAddr,
        domain: u32,
        def: &TemplateDef<'_>,
        learned_us: UnixMicros,
        refreshed_us: UnixMicros,
        now: UnixMicros,
    ) -> Result<(), Refusal> {
        if now.saturating_sub(refreshed_us) > self.limits.ttl_us {
            return Err("expired");
        }
        self.learn(exporter, domain, def, refreshed_us)?;
        let key = TemplateKey {
            exporter,
            domain,
            id: def.id,
        };
        if let Some(t) = self.map.get_mut(&key) {
            t.learned_us = learned_us.min(refreshed_us);
            t.refreshed_us = refreshed_us;
            t.restored = true;
        }
        Ok(())
    }

    /// Withdraws one template (IPFIX field count 0). Returns whether it was cached.
    pub fn withdraw(&mut self, exporter: IpAddr, domain: u32, id: u16) -> bool {
        self.remove(&TemplateKey {
            exporter,
            domain,
            id,
        })
        .is_some()
    }

    /// Withdraws every template of `kind` of (exporter, domain) (IPFIX "all templates").
    pub fn withdraw_all(&mut self, exporter: IpAddr, domain: u32, kind: TemplateKind) -> usize {
        let keys: Vec<TemplateKey> = self
            .map
            .iter()
            .filter(|(k, t)| k.exporter == exporter && k.domain == domain && t.kind == kind)
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.remove(k);
        }
        keys.len()
    }

    /// The template for `key` if it was refreshed within the TTL of `now`; an expired one is
    /// dropped.
    #[inline]
    pub fn get(&mut self, key: &TemplateKey, now: UnixMicros) -> Option<&Template> {
        let ttl = self.limits.ttl_us;
        let t = self.map.get_mut(key)?;
        if now.saturating_sub(t.refreshed_us) > ttl {
            self.remove(key);
            self.expired += 1;
            return None;
        }
        t.used = true;
        self.map.get(key)
    }

    /// Drops every template not refreshed within the TTL of `now`. Returns how many.
    pub fn expire(&mut self, now: UnixMicros) -> usize {
        let ttl = self.limits.ttl_us;
        let keys: Vec<TemplateKey> = self
            .map
            .iter()
            .filter(|(_, t)| now.saturating_sub(t.refreshed_us) > ttl)
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.remove(k);
        }
        self.expired += keys.len() as u64;
        keys.len()
    }

    /// Every cached template.
    pub fn iter(&self) -> impl Iterator<Item = (&TemplateKey, &Template)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::record::Slot;

    const E1: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const E2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn limits() -> TemplateLimits {
        TemplateLimits {
            ttl_us: 60_000_000,
            max_per_exporter: 2,
            max_total: 3,
            max_fields_per_template: 8,
            max_fields_per_exporter: 100,
            max_fields_total: 100,
        }
    }

    fn def(id: u16, raw: &[u8]) -> TemplateDef<'_> {
        TemplateDef {
            id,
            kind: TemplateKind::Data,
            scope_count: 0,
            field_count: (raw.len() / 4) as u16,
            ipfix: true,
            raw,
        }
    }

    // srcaddr(8)/4, dstaddr(12)/4, bytes(1)/8
    const RAW: [u8; 12] = [0, 8, 0, 4, 0, 12, 0, 4, 0, 1, 0, 8];

    #[test]
    fn compiles_a_fixed_template() {
        let t = Template::compile(&def(256, &RAW), 8, 0).map_err(|e| e.to_string());
        let t = t.as_ref().map(|t| (*t.plan(), t.is_variable()));
        let (plan, var) = t.unwrap_or((Plan::EMPTY, true));
        assert!(!var);
        assert_eq!(plan.record_len, 16);
        assert_eq!(plan.src_ip, Slot::new(0, 4));
        assert_eq!(plan.dst_ip, Slot::new(4, 4));
        assert_eq!(plan.in_bytes, Slot::new(8, 8));
    }

    #[test]
    fn refuses_bad_templates() {
        assert_eq!(
            Template::compile(&def(256, &[]), 8, 0).err(),
            Some("no fields")
        );
        assert_eq!(
            Template::compile(&def(256, &[0, 1, 0, 0]), 8, 0).err(),
            Some("zero-length records")
        );
        // A zero-length field next to real ones is fine, and absent.
        let t = Template::compile(&def(256, &[0, 1, 0, 0, 0, 2, 0, 4]), 8, 0);
        assert_eq!(
            t.map(|t| (
                t.min_len(),
                t.plan().in_bytes.is_present(),
                t.plan().in_pkts
            )),
            Ok((4, false, Slot::new(0, 4)))
        );
        let many = [0u8, 1, 0, 1].repeat(9);
        assert_eq!(
            Template::compile(&def(256, &many), 8, 0).err(),
            Some("too many fields")
        );
        let long = [0u8, 1, 0xff, 0xf0, 0, 2, 0, 0x20].to_vec();
        assert_eq!(
            Template::compile(&def(256, &long), 8, 0).err(),
            Some("record longer than a set")
        );
    }

    #[test]
    fn walks_variable_length_records() {
        // src(8)/4, var (82 interfaceName)/65535, bytes(1)/var, dst(12)/4
        let raw = [0, 8, 0, 4, 0, 82, 0xff, 0xff, 0, 1, 0xff, 0xff, 0, 12, 0, 4];
        let t = Template::compile(&def(300, &raw), 8, 0);
        let Ok(t) = t else {
            panic!("refused: {:?}", t.err());
        };
        assert!(t.is_variable());
        assert_eq!(t.min_len(), 10);
        // 1-byte length 3, then 3-byte form (255, 0, 2) for a 2-byte counter.
        let rec = [
            10, 0, 0, 1, 3, b'e', b't', b'h', 255, 0, 2, 0x01, 0x02, 10, 0, 0, 2, 0xee,
        ];
        let (plan, _) = t.walk(&rec).unwrap_or_default();
        assert_eq!(plan.record_len, 17);
        assert_eq!(plan.src_ip, Slot::new(0, 4));
        assert_eq!(plan.in_bytes, Slot::new(11, 2));
        assert_eq!(plan.dst_ip, Slot::new(13, 4));
        assert!(t.walk(&rec[..16]).is_none());
    }

    #[test]
    fn keyed_by_exporter_and_domain_replaced_withdrawn_expired() {
        let mut c = TemplateCache::new(limits());
        let k = |e, d, id| TemplateKey {
            exporter: e,
            domain: d,
            id,
        };
        assert_eq!(c.learn(E1, 1, &def(256, &RAW), 0), Ok(Learned::New));
        assert_eq!(c.learn(E1, 1, &def(256, &RAW), 10), Ok(Learned::Refreshed));
        assert!(c.get(&k(E1, 2, 256), 10).is_none());
        assert!(c.get(&k(E2, 1, 256), 10).is_none());
        assert_eq!(
            c.learn(E1, 1, &def(256, &RAW[..8]), 20),
            Ok(Learned::Replaced)
        );
        assert_eq!(c.get(&k(E1, 1, 256), 20).map(|t| t.min_len()), Some(8));
        // Per-exporter bound: 2.
        assert_eq!(c.learn(E1, 2, &def(256, &RAW), 20), Ok(Learned::New));
        assert_eq!(
            c.learn(E1, 3, &def(256, &RAW), 20),
            Err(REFUSED_EXPORTER_FULL)
        );
        // A replacement under the exporter's bound is not refused.
        assert_eq!(
            c.learn(E1, 2, &def(256, &RAW[..8]), 20),
            Ok(Learned::Replaced)
        );
        // Total bound: 3.
        assert_eq!(c.learn(E2, 1, &def(256, &RAW), 20), Ok(Learned::New));
        assert_eq!(c.evicted(), 0);
        assert!(c.withdraw(E2, 1, 256));
        assert!(!c.withdraw(E2, 1, 256));
        assert_eq!(c.len(), 2);
        // TTL: 60 s after the last refresh.
        assert!(c.get(&k(E1, 1, 256), 60_000_020).is_some());
        assert!(c.get(&k(E1, 1, 256), 60_000_021).is_none());
        assert_eq!(c.expired(), 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.withdraw_all(E1, 2, TemplateKind::Data), 1);
        assert!(c.is_empty());
        assert_eq!(c.count_for(E1), 0);
    }

    #[test]
    fn full_cache_evicts_what_no_data_set_used() {
        // Regression (issue 13): a flood of never-used templates filled the cache and every
        // new exporter was refused from then on.
        let mut c = TemplateCache::new(TemplateLimits {
            max_per_exporter: 8,
            ..limits()
        });
        let k = |e, id| TemplateKey {
            exporter: e,
            domain: 1,
            id,
        };
        assert_eq!(c.learn(E1, 1, &def(256, &RAW), 0), Ok(Learned::New));
        assert_eq!(c.learn(E2, 1, &def(300, &RAW), 0), Ok(Learned::New));
        assert_eq!(c.learn(E2, 1, &def(301, &RAW), 0), Ok(Learned::New));
        // E1's template is used by data; the flood's are not.
        assert!(c.get(&k(E1, 256), 1).is_some());
        for id in 302..400 {
            assert_eq!(c.learn(E2, 1, &def(id, &RAW), 2), Ok(Learned::New), "{id}");
            assert!(c.get(&k(E1, 256), 3).is_some(), "the used one stays ({id})");
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.evicted(), 98);
        // A new exporter is admitted too.
        let e3 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));
        assert_eq!(c.learn(e3, 1, &def(256, &RAW), 4), Ok(Learned::New));
        assert!(c.get(&k(E1, 256), 5).is_some());
        assert_eq!(c.count_for(e3), 1);
        // The ring stays bounded however many come and go.
        for id in 400..5000u16 {
            let _ = c.learn(E2, 1, &def(id, &RAW), 6);
        }
        assert!(c.ring.len() <= 2 * c.len() + 1024 + 1, "{}", c.ring.len());
    }
}
