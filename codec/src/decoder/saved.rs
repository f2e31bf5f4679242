//! What a decoder knows that must survive a restart: every template and options template, and
//! the sampling state (sampler table, system init time) of every (exporter, observation domain).
//! [`Decoder::save`] copies it out, [`SavedState::encode`] / [`SavedState::decode`] turn it into
//! bytes and back (a small versioned binary format, read through the bounded [`Reader`] like any
//! untrusted input: the file may be damaged or from another version), and [`Decoder::restore`]
//! loads it into a fresh decoder. Restored templates keep their learn and refresh times, so the
//! TTL still counts from the exporter's last announcement, and are marked `restored` until the
//! exporter announces them again. Sans-I/O: the daemon writes and reads the file.
//!
//! Format (big-endian): `GFTPL\0\0\x01`, u32 template count, per template: address (u8 4 or 6,
//! then 4 or 16 bytes), u32 domain, u16 id, u8 kind (0 data, 1 options), u8 ipfix, u16 scope
//! count, i64 learned, i64 refreshed, u16 field count, per field u16 id, u16 length, u32
//! enterprise; then u32 domain count, per domain: address, u32 domain, u8 has-default, u32
//! default rate, u8 has-init, u64 init ms, u16 sampler count, per sampler u64 id, u32 rate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Decoder, DomainState, EXPORTERS_MAX};
use crate::UnixMicros;
use crate::error::DecodeError;
use crate::reader::Reader;
use crate::sampling::{SAMPLERS_PER_DOMAIN_MAX, SamplerTable};
use crate::template::{FieldSpec, TemplateDef, TemplateKind};

/// The first bytes of a saved state (the last byte is the format version).
pub const MAGIC: [u8; 8] = *b"GFTPL\0\0\x01";

/// One saved template: enough to compile it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedTemplate {
    pub exporter: IpAddr,
    pub domain: u32,
    pub id: u16,
    pub kind: TemplateKind,
    pub ipfix: bool,
    pub scope_count: u16,
    pub fields: Vec<FieldSpec>,
    pub learned_us: UnixMicros,
    pub refreshed_us: UnixMicros,
}

/// The sampling state of one (exporter, domain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedDomain {
    pub exporter: IpAddr,
    pub domain: u32,
    /// The default rate (options data without a sampler id).
    pub default_rate: Option<u32>,
    /// Rates by sampler id.
    pub samplers: Vec<(u64, u32)>,
    pub system_init_ms: Option<u64>,
}

/// Everything [`Decoder::save`] copies out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedState {
    pub templates: Vec<SavedTemplate>,
    pub domains: Vec<SavedDomain>,
}

/// What [`Decoder::restore`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreOutcome {
    pub templates: usize,
    /// Saved templates older than the TTL (not restored).
    pub expired: usize,
    /// Saved templates the cache refused (limits, bad fields).
    pub refused: usize,
    pub domains: usize,
}

impl SavedState {
    /// Merges `other` in: per (exporter, domain, id) the more recently refreshed template wins;
    /// per (exporter, domain) `other`'s sampling state wins when this one has none.
    pub fn merge(&mut self, other: &SavedState) {
        for t in &other.templates {
            match self
                .templates
                .iter_mut()
                .find(|s| s.exporter == t.exporter && s.domain == t.domain && s.id == t.id)
            {
                Some(s) if s.refreshed_us < t.refreshed_us => *s = t.clone(),
                Some(_) => {}
                None => self.templates.push(t.clone()),
            }
        }
        for d in &other.domains {
            if !self
                .domains
                .iter()
                .any(|s| s.exporter == d.exporter && s.domain == d.domain)
            {
                self.domains.push(d.clone());
            }
        }
    }

    /// Appends the encoded state to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        put_len(out, self.templates.len());
        for t in &self.templates {
            put_addr(out, t.exporter);
            out.extend_from_slice(&t.domain.to_be_bytes());
            out.extend_from_slice(&t.id.to_be_bytes());
            out.push(u8::from(t.kind == TemplateKind::Options));
            out.push(u8::from(t.ipfix));
            out.extend_from_slice(&t.scope_count.to_be_bytes());
            out.extend_from_slice(&t.learned_us.to_be_bytes());
            out.extend_from_slice(&t.refreshed_us.to_be_bytes());
            let n = u16::try_from(t.fields.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&n.to_be_bytes());
            for f in t.fields.iter().take(usize::from(n)) {
                out.extend_from_slice(&f.id.to_be_bytes());
                out.extend_from_slice(&f.len.to_be_bytes());
                out.extend_from_slice(&f.enterprise.to_be_bytes());
            }
        }
        put_len(out, self.domains.len());
        for d in &self.domains {
            put_addr(out, d.exporter);
            out.extend_from_slice(&d.domain.to_be_bytes());
            out.push(u8::from(d.default_rate.is_some()));
            out.extend_from_slice(&d.default_rate.unwrap_or(0).to_be_bytes());
            out.push(u8::from(d.system_init_ms.is_some()));
            out.extend_from_slice(&d.system_init_ms.unwrap_or(0).to_be_bytes());
            let n = d.samplers.len().min(SAMPLERS_PER_DOMAIN_MAX);
            out.extend_from_slice(&u16::try_from(n).unwrap_or(0).to_be_bytes());
            for (id, rate) in d.samplers.iter().take(n) {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&rate.to_be_bytes());
            }
        }
    }

    /// Reads a saved state. A damaged or foreign file is an error, never a panic; counts taken
    /// from the bytes are checked against the bytes left before anything is allocated.
    pub fn decode(bytes: &[u8]) -> Result<SavedState, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.take_array::<8>("saved state header")? != MAGIC {
            return Err(DecodeError::BadLength {
                what: "saved state header (not a goflow template file, or another version)",
            });
        }
        let n = bounded_count(&mut r, 35, "saved template count")?;
        let mut templates = Vec::with_capacity(n);
        for _ in 0..n {
            let exporter = addr(&mut r)?;
            let domain = r.u32("saved template")?;
            let id = r.u16("saved template")?;
            let kind = match r.u8("saved template")? {
                0 => TemplateKind::Data,
                1 => TemplateKind::Options,
                _ => {
                    return Err(DecodeError::BadTemplate {
                        what: "saved template kind",
                    });
                }
            };
            let ipfix = r.u8("saved template")? != 0;
            let scope_count = r.u16("saved template")?;
            let learned_us = r.u64("saved template")? as i64;
            let refreshed_us = r.u64("saved template")? as i64;
            let nf = usize::from(r.u16("saved template")?);
            if nf.saturating_mul(8) > r.left() {
                return Err(DecodeError::BadLength {
                    what: "saved template fields",
                });
            }
            let mut fields = Vec::with_capacity(nf);
            for _ in 0..nf {
                fields.push(FieldSpec {
                    id: r.u16("saved field")?,
                    len: r.u16("saved field")?,
                    enterprise: r.u32("saved field")?,
                });
            }
            templates.push(SavedTemplate {
                exporter,
                domain,
                id,
                kind,
                ipfix,
                scope_count,
                fields,
                learned_us,
                refreshed_us,
            });
        }
        let n = bounded_count(&mut r, 21, "saved domain count")?;
        let mut domains = Vec::with_capacity(n);
        for _ in 0..n {
            let exporter = addr(&mut r)?;
            let domain = r.u32("saved domain")?;
            let has_default = r.u8("saved domain")? != 0;
            let default = r.u32("saved domain")?;
            let has_init = r.u8("saved domain")? != 0;
            let init = r.u64("saved domain")?;
            let ns = usize::from(r.u16("saved domain")?);
            if ns.saturating_mul(12) > r.left() {
                return Err(DecodeError::BadLength {
                    what: "saved samplers",
                });
            }
            let mut samplers = Vec::with_capacity(ns);
            for _ in 0..ns {
                samplers.push((r.u64("saved sampler")?, r.u32("saved sampler")?));
            }
            domains.push(SavedDomain {
                exporter,
                domain,
                default_rate: has_default.then_some(default),
                samplers,
                system_init_ms: has_init.then_some(init),
            });
        }
        if !r.is_empty() {
            return Err(DecodeError::BadLength {
                what: "saved state (bytes after the end)",
            });
        }
        Ok(SavedState { templates, domains })
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_addr(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn addr(r: &mut Reader<'_>) -> Result<IpAddr, DecodeError> {
    match r.u8("saved address")? {
        4 => Ok(IpAddr::V4(Ipv4Addr::from(
            r.take_array::<4>("saved address")?,
        ))),
        6 => Ok(IpAddr::V6(Ipv6Addr::from(
            r.take_array::<16>("saved address")?,
        ))),
        _ => Err(DecodeError::BadLength {
            what: "saved address family",
        }),
    }
}

/// A u32 count of items of at least `min_item` bytes each, checked against the bytes left.
fn bounded_count(
    r: &mut Reader<'_>,
    min_item: usize,
    what: &'static str,
) -> Result<usize, DecodeError> {
    let n = usize::try_from(r.u32(what)?).map_err(|_| DecodeError::BadLength { what })?;
    if n.saturating_mul(min_item) > r.left() {
        return Err(DecodeError::BadLength { what });
    }
    Ok(n)
}

/// Field specifiers back in their wire form (v9: id, length; IPFIX: the enterprise bit and
/// number when set), so a saved template compiles through the same path as an announced one.
fn raw_fields(t: &SavedTemplate) -> Vec<u8> {
    let mut raw = Vec::with_capacity(t.fields.len() * 8);
    for f in &t.fields {
        if t.ipfix && f.enterprise != 0 {
            raw.extend_from_slice(&(f.id | 0x8000).to_be_bytes());
            raw.extend_from_slice(&f.len.to_be_bytes());
            raw.extend_from_slice(&f.enterprise.to_be_bytes());
        } else {
            raw.extend_from_slice(&f.id.to_be_bytes());
            raw.extend_from_slice(&f.len.to_be_bytes());
        }
    }
    raw
}

impl Decoder {
    /// Copies out every template and every domain's sampling state.
    pub fn save(&self) -> SavedState {
        let mut templates: Vec<SavedTemplate> = self
            .templates
            .iter()
            .map(|(k, t)| SavedTemplate {
                exporter: k.exporter,
                domain: k.domain,
                id: k.id,
                kind: t.kind,
                ipfix: t.ipfix,
                scope_count: t.scope_count,
                fields: t.fields().to_vec(),
                learned_us: t.learned_us,
                refreshed_us: t.refreshed_us,
            })
            .collect();
        templates.sort_by_key(|t| (t.exporter, t.domain, t.id));
        let mut domains: Vec<SavedDomain> = self
            .domains
            .iter()
            .filter(|(_, d)| **d != DomainState::default())
            .map(|((exporter, domain), d)| {
                let (default_rate, samplers) = d.samplers.parts();
                SavedDomain {
                    exporter: *exporter,
                    domain: *domain,
                    default_rate,
                    samplers: samplers.to_vec(),
                    system_init_ms: d.system_init_ms,
                }
            })
            .collect();
        domains.sort_by_key(|d| (d.exporter, d.domain));
        SavedState { templates, domains }
    }

    /// Loads saved state into this decoder (normally a fresh one, at start). Templates go
    /// through the cache's bounds and the TTL at `now`; each restored one is marked as such.
    pub fn restore(&mut self, state: &SavedState, now: UnixMicros) -> RestoreOutcome {
        let mut out = RestoreOutcome::default();
        for t in &state.templates {
            let raw = raw_fields(t);
            let def = TemplateDef {
                id: t.id,
                kind: t.kind,
                scope_count: t.scope_count,
                field_count: u16::try_from(t.fields.len()).unwrap_or(u16::MAX),
                ipfix: t.ipfix,
                raw: &raw,
            };
            match self.templates.restore(
                t.exporter,
                t.domain,
                &def,
                t.learned_us,
                t.refreshed_us,
                now,
            ) {
                Ok(()) => out.templates += 1,
                Err("expired") => out.expired += 1,
                Err(_) => out.refused += 1,
            }
        }
        for d in &state.domains {
            let key = (d.exporter, d.domain);
            if !self.domains.contains_key(&key) && self.domains.len() >= EXPORTERS_MAX {
                continue;
            }
            let dom = self.domains.entry(key).or_default();
            dom.samplers = SamplerTable::from_parts(d.default_rate, &d.samplers);
            dom.system_init_ms = d.system_init_ms;
            out.domains += 1;
        }
        self.generation += 1;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{
        IPFIX_TYPICAL_V4_TEMPLATE as T4, IpfixBuilder, IpfixHeader, sample_flow_v4,
    };

    const E: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));

    fn state() -> SavedState {
        SavedState {
            templates: vec![SavedTemplate {
                exporter: E,
                domain: 7,
                id: 256,
                kind: TemplateKind::Data,
                ipfix: true,
                scope_count: 0,
                fields: vec![
                    FieldSpec {
                        id: 8,
                        len: 4,
                        enterprise: 0,
                    },
                    FieldSpec {
                        id: 1,
                        len: 8,
                        enterprise: 0,
                    },
                    FieldSpec {
                        id: 100,
                        len: 2,
                        enterprise: 9,
                    },
                ],
                learned_us: 1_000_000,
                refreshed_us: 2_000_000,
            }],
            domains: vec![SavedDomain {
                exporter: IpAddr::V6(Ipv6Addr::LOCALHOST),
                domain: 1,
                default_rate: Some(100),
                samplers: vec![(5, 1000)],
                system_init_ms: Some(42),
            }],
        }
    }

    #[test]
    fn encodes_and_decodes_and_refuses_damage() {
        let s = state();
        let mut bytes = Vec::new();
        s.encode(&mut bytes);
        assert_eq!(SavedState::decode(&bytes), Ok(s));
        // Every truncation is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(SavedState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[7] = 2;
        assert!(SavedState::decode(&bad).is_err());
        // A huge count in a short file is refused before allocating.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(SavedState::decode(&huge).is_err());
    }

    #[test]
    fn a_restored_decoder_decodes_data_without_the_template() {
        // Learn a template in one decoder, save, restore into a fresh one, send data only.
        let t0: UnixMicros = 1_700_000_000_000_000;
        let mut b = IpfixBuilder::new(IpfixHeader {
            export_time: 1_700_000_000,
            observation_domain: 3,
            ..IpfixHeader::default()
        });
        let mut with_template = Vec::new();
        assert!(b.template(256, T4).is_ok());
        assert!(b.data(256, T4, &sample_flow_v4(1)).is_ok());
        b.finish(&mut with_template);
        let mut first = Decoder::default();
        let o = first.decode(E, t0, &with_template, |_| {});
        assert_eq!(o.map(|o| (o.records, o.templates)), Ok((1, 1)));
        let g = first.generation();
        assert!(g > 0);
        let mut bytes = Vec::new();
        first.save().encode(&mut bytes);
        let saved = SavedState::decode(&bytes).unwrap_or_default();
        assert_eq!(saved.templates.len(), 1);

        let mut data_only = Vec::new();
        assert!(b.data(256, T4, &sample_flow_v4(2)).is_ok());
        b.finish(&mut data_only);

        let mut fresh = Decoder::default();
        assert_eq!(
            fresh.decode(E, t0, &data_only, |_| {}).map(|o| o.records),
            Ok(0)
        );
        let mut restored = Decoder::default();
        let r = restored.restore(&saved, t0 + 1_000_000);
        assert_eq!(r.templates, 1);
        let list = restored.templates(t0 + 1_000_000);
        assert!(list.iter().all(|t| t.restored));
        let mut n = 0;
        let o = restored.decode(E, t0 + 2_000_000, &data_only, |r| {
            n += 1;
            assert_eq!(r.in_bytes(), Some(sample_flow_v4(2).bytes));
        });
        assert_eq!(o.map(|o| o.records), Ok(1));
        assert_eq!(n, 1);
        // The TTL counts from the saved refresh, not from the restore.
        let mut late = Decoder::default();
        let ttl_us = 1800 * 1_000_000;
        let r = late.restore(&saved, t0 + ttl_us + 1);
        assert_eq!((r.templates, r.expired), (0, 1));
        // A re-announcement clears `restored`.
        let o = restored.decode(E, t0 + 3_000_000, &with_template, |_| {});
        assert!(o.is_ok());
        assert!(
            restored
                .templates(t0 + 3_000_000)
                .iter()
                .all(|t| !t.restored)
        );
    }
}
