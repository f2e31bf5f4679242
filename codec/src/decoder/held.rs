//! Data that arrives before its template: a v9/IPFIX data set whose template is not (yet) known
//! is copied and held, per (exporter, observation domain, template id), with the packet context
//! it came with, and decoded when that template arrives (in the same datagram or a later one:
//! its records are handed out after the records of the datagram that carried the template).
//! Held data is bounded in bytes per template (`held_bytes_per_template`, default
//! [`HELD_BYTES_PER_TEMPLATE`]: beyond it the newest set is not held) and per decoder
//! (`held_bytes`, default [`HELD_BYTES`]: beyond it the oldest sets make room), and in age
//! (`held_max_age_secs`, default [`HELD_MAX_AGE_SECS`], against receive times, so it stays
//! sans-I/O); the daemon sets them from `limits:` in its config. Every set that
//! leaves unheld, by age or for room, is counted (`held_expired_sets`, `held_dropped_sets`)
//! and, as before, in `records_without_template`.

use std::collections::VecDeque;

use super::{Decoder, Emit, Progress};
use crate::UnixMicros;
use crate::record::PacketContext;
use crate::template::TemplateKey;

/// Default bytes of held data sets one decoder (one worker) keeps at most.
pub const HELD_BYTES: usize = 8 << 20;
/// Default bytes of held data sets of one template key at most.
pub const HELD_BYTES_PER_TEMPLATE: usize = 1 << 20;
/// Default age: held sets older than this (receive time) are dropped, counted. Many exporters resend their
/// templates every 5 to 10 minutes; with templates persisted across restarts only new
/// templates wait this long.
pub const HELD_MAX_AGE_SECS: u64 = 600;

/// One held data set.
#[derive(Debug)]
struct HeldSet {
    key: TemplateKey,
    ctx: PacketContext,
    bytes: Vec<u8>,
}

/// The held sets of one decoder, oldest first.
#[derive(Debug, Default)]
pub(super) struct Held {
    sets: VecDeque<HeldSet>,
    bytes: usize,
    /// Keys whose template was just learned and that have held sets.
    pub(super) release: Vec<TemplateKey>,
}

impl Held {
    pub(super) fn holds(&self, key: &TemplateKey) -> bool {
        self.sets.iter().any(|s| s.key == *key)
    }
}

impl Decoder {
    /// Bytes and sets held right now.
    pub fn held(&self) -> (usize, usize) {
        (self.held.bytes, self.held.sets.len())
    }

    /// Holds a copy of a data set without a known template. False when it cannot be held
    /// (over the per-template bound).
    pub(super) fn hold(&mut self, key: TemplateKey, body: &[u8], ctx: &PacketContext) -> bool {
        self.expire_held(ctx.received_us);
        let for_key: usize = self
            .held
            .sets
            .iter()
            .filter(|s| s.key == key)
            .map(|s| s.bytes.len())
            .sum();
        let (max_total, max_key) = (self.config.held_bytes, self.config.held_bytes_per_template);
        if for_key + body.len() > max_key || body.len() > max_total {
            return false;
        }
        while self.held.bytes + body.len() > max_total {
            let Some(old) = self.held.sets.pop_front() else {
                break;
            };
            self.held.bytes -= old.bytes.len();
            self.stats.held_dropped_sets += 1;
            self.stats.records_without_template += 1;
            self.stats.bytes_without_template += old.bytes.len() as u64;
        }
        self.held.bytes += body.len();
        self.held.sets.push_back(HeldSet {
            key,
            ctx: *ctx,
            bytes: body.to_vec(),
        });
        self.stats.sets_held += 1;
        true
    }

    /// Drops held sets older than `held_max_age_secs` (default [`HELD_MAX_AGE_SECS`]) at
    /// `now`. Returns how many.
    pub fn expire_held(&mut self, now: UnixMicros) -> usize {
        let max = i64::try_from(self.config.held_max_age_secs.saturating_mul(1_000_000))
            .unwrap_or(i64::MAX);
        let mut n = 0;
        while self
            .held
            .sets
            .front()
            .is_some_and(|s| now.saturating_sub(s.ctx.received_us) > max)
        {
            if let Some(old) = self.held.sets.pop_front() {
                self.held.bytes -= old.bytes.len();
                self.stats.bytes_without_template += old.bytes.len() as u64;
                n += 1;
            }
        }
        self.stats.held_expired_sets += n as u64;
        self.stats.records_without_template += n as u64;
        n
    }

    /// The next held set whose template was learned in the last datagram.
    pub(super) fn take_released(&mut self) -> Option<(TemplateKey, PacketContext, Vec<u8>)> {
        while let Some(&key) = self.held.release.last() {
            match self.held.sets.iter().position(|s| s.key == key) {
                Some(i) => {
                    let set = self.held.sets.remove(i)?;
                    self.held.bytes -= set.bytes.len();
                    return Some((set.key, set.ctx, set.bytes));
                }
                None => {
                    self.held.release.pop();
                }
            }
        }
        None
    }

    /// Decodes one released set (its bytes in `bytes`, which the caller placed where its
    /// records may borrow them). Returns the records handed to `emit`.
    pub(super) fn decode_released<'x>(
        &mut self,
        key: TemplateKey,
        ctx: &PacketContext,
        bytes: &'x [u8],
        emit: &mut Emit<'_, 'x>,
    ) -> u32 {
        let mut p = Progress {
            releasing: true,
            ..Progress::default()
        };
        let n = match self.data_set(key.id, bytes, ctx, &mut p, emit) {
            Some(_) => p.outcome.records,
            None => 0,
        };
        self.stats.held_released_records += u64::from(n);
        self.stats.records += u64::from(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{
        IPFIX_TYPICAL_V4_TEMPLATE as T4, IpfixBuilder, IpfixHeader, sample_flow_v4,
    };
    use std::net::{IpAddr, Ipv4Addr};

    const E: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 5));
    const T0: UnixMicros = 1_700_000_000_000_000;

    fn msg(template: bool, flows: std::ops::Range<u32>) -> Vec<u8> {
        let mut b = IpfixBuilder::new(IpfixHeader {
            export_time: 1_700_000_000,
            observation_domain: 1,
            ..IpfixHeader::default()
        });
        if template {
            assert!(b.template(256, T4).is_ok());
        }
        for i in flows {
            assert!(b.data(256, T4, &sample_flow_v4(i)).is_ok());
        }
        let mut out = Vec::new();
        b.finish(&mut out);
        out
    }

    fn bytes_of(d: &mut Decoder, at: UnixMicros, pkt: &[u8]) -> Vec<u64> {
        let mut got = Vec::new();
        let _ = d.decode(E, at, pkt, |r| got.push(r.in_bytes().unwrap_or(0)));
        got
    }

    #[test]
    fn data_before_its_template_is_decoded_when_it_arrives() {
        let mut d = Decoder::default();
        assert!(bytes_of(&mut d, T0, &msg(false, 0..3)).is_empty());
        assert!(bytes_of(&mut d, T0 + 1, &msg(false, 3..5)).is_empty());
        assert_eq!(d.held().1, 2);
        assert_eq!(d.stats().records_without_template, 0);
        // The template arrives with two more records: those first, then the held ones.
        let got = bytes_of(&mut d, T0 + 2, &msg(true, 5..7));
        let want: Vec<u64> = [5, 6, 0, 1, 2, 3, 4].iter().map(|i| 1500 + i).collect();
        assert_eq!(got, want);
        assert_eq!(d.held(), (0, 0));
        assert_eq!(d.stats().held_released_records, 5);
        assert_eq!(d.stats().records, 7);

        // The arena path too.
        let mut d = Decoder::default();
        let early = msg(false, 0..2);
        let tpl = msg(true, 2..3);
        let arena = bumpalo::Bump::new();
        let mut out = bumpalo::collections::Vec::new_in(&arena);
        assert!(d.decode_into(E, T0, &early, &arena, &mut out).is_ok());
        let o = d.decode_into(E, T0 + 1, &tpl, &arena, &mut out);
        assert_eq!(o.map(|o| o.records), Ok(3));
        let got: Vec<u64> = out.iter().map(|r| r.in_bytes().unwrap_or(0)).collect();
        assert_eq!(got, vec![1502, 1500, 1501]);
    }

    #[test]
    fn held_data_expires_and_is_bounded_and_counted() {
        let mut d = Decoder::default();
        let _ = bytes_of(&mut d, T0, &msg(false, 0..3));
        let late = T0 + i64::try_from(HELD_MAX_AGE_SECS).unwrap_or(0) * 1_000_000 + 1;
        assert_eq!(d.expire_held(late), 1);
        assert_eq!(d.stats().held_expired_sets, 1);
        assert_eq!(d.stats().records_without_template, 1);
        assert!(bytes_of(&mut d, late, &msg(true, 9..10)) == vec![1509]);
        // Per template: 1 MiB; a flood of early data for one key stops being held.
        let mut d = Decoder::default();
        let pkt = msg(false, 0..20);
        for _ in 0..(HELD_BYTES_PER_TEMPLATE / (pkt.len() - 16)) + 10 {
            let _ = bytes_of(&mut d, T0, &pkt);
        }
        assert!(d.held().0 <= HELD_BYTES_PER_TEMPLATE);
        assert!(d.stats().records_without_template > 0);
    }

    #[test]
    fn held_limits_come_from_the_config() {
        // 0 bytes: nothing is held, every early set counts as without template at once.
        let mut d = Decoder::new(super::super::DecoderConfig {
            held_bytes: 0,
            ..Default::default()
        });
        let _ = bytes_of(&mut d, T0, &msg(false, 0..3));
        assert_eq!((d.held(), d.stats().records_without_template), ((0, 0), 1));
        // A per-template bound of one set: the second set of the key is not held.
        // The set's body: the message less its 16-byte header and the 4-byte set header.
        let one = msg(false, 0..3).len() - 20;
        let mut d = Decoder::new(super::super::DecoderConfig {
            held_bytes_per_template: one,
            held_max_age_secs: 5,
            ..Default::default()
        });
        let _ = bytes_of(&mut d, T0, &msg(false, 0..3));
        let _ = bytes_of(&mut d, T0, &msg(false, 3..6));
        assert_eq!(d.held(), (one, 1));
        // And the age: 5 s, not the default 600 s.
        assert_eq!(d.expire_held(T0 + 5_000_001), 1);
    }
}
