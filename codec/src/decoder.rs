//! The decoder: one per receive worker. It owns the template cache, the sampler tables and the
//! sequence trackers of the exporters that worker sees, and turns a datagram into record views.

use std::net::IpAddr;

use crate::UnixMicros;
use crate::error::DecodeError;
use crate::record::{FlowRecord, PacketContext};
use crate::sampling::{Sampling, SamplingSource};
use crate::sequence::SequenceTracker;
use crate::v5;

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
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            template_ttl_secs: 1800,
            max_templates_per_exporter: 1024,
            max_templates_total: 65_536,
            max_fields_per_template: 512,
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
    /// Data records skipped because their template is not (yet) known.
    pub records_without_template: u32,
    /// Templates (and options templates) learned or refreshed.
    pub templates: u32,
}

/// Counters over the decoder's life. Read them between batches; they only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecoderStats {
    pub datagrams: u64,
    pub records: u64,
    pub records_without_template: u64,
    pub templates_rejected: u64,
    pub errors_truncated: u64,
    pub errors_unsupported_version: u64,
    pub errors_bad_length: u64,
    pub errors_bad_template: u64,
}

impl DecoderStats {
    fn count_error(&mut self, e: &DecodeError) {
        match e {
            DecodeError::Truncated { .. } => self.errors_truncated += 1,
            DecodeError::UnsupportedVersion { .. } => self.errors_unsupported_version += 1,
            DecodeError::BadLength { .. } => self.errors_bad_length += 1,
            DecodeError::BadTemplate { .. } => self.errors_bad_template += 1,
        }
    }
}

/// Decodes datagrams of any number of exporters. Not `Sync`: one per worker.
#[derive(Debug, Default)]
pub struct Decoder {
    config: DecoderConfig,
    stats: DecoderStats,
    sequences: SequenceTracker,
}

impl Decoder {
    pub fn new(config: DecoderConfig) -> Self {
        Decoder {
            config,
            stats: DecoderStats::default(),
            sequences: SequenceTracker::default(),
        }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    pub fn stats(&self) -> &DecoderStats {
        &self.stats
    }

    pub fn sequences(&self) -> &SequenceTracker {
        &self.sequences
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
        self.stats.datagrams += 1;
        let result = match datagram {
            [0, 5, ..] => self.decode_v5(exporter, received_us, datagram, &mut on_record),
            [0, 9, ..] => Err(DecodeError::UnsupportedVersion { version: 9 }),
            [0, 10, ..] => Err(DecodeError::UnsupportedVersion { version: 10 }),
            [a, b, ..] => Err(DecodeError::UnsupportedVersion {
                version: u16::from_be_bytes([*a, *b]),
            }),
            _ => Err(DecodeError::Truncated { what: "version" }),
        };
        match &result {
            Ok(o) => {
                self.stats.records += u64::from(o.records);
                self.stats.records_without_template += u64::from(o.records_without_template);
            }
            Err(e) => self.stats.count_error(e),
        }
        result
    }

    fn decode_v5(
        &mut self,
        exporter: IpAddr,
        received_us: UnixMicros,
        datagram: &[u8],
        on_record: &mut impl FnMut(&FlowRecord<'_>),
    ) -> Result<DatagramOutcome, DecodeError> {
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
        let interval = pkt.sampling_interval();
        let sampling = if interval > 0 {
            Sampling {
                rate: interval,
                source: SamplingSource::V5Header,
            }
        } else {
            Sampling::default()
        };
        let count = pkt.count();
        self.sequences.observe(
            exporter,
            ctx.observation_domain,
            5,
            pkt.flow_sequence(),
            count as u32,
        );
        for rec in pkt.records.chunks_exact(v5::V5_PLAN.record_len as usize) {
            on_record(&FlowRecord::new(rec, &v5::V5_PLAN, &ctx, sampling));
        }
        Ok(DatagramOutcome {
            version: 5,
            records: count as u32,
            ..DatagramOutcome::default()
        })
    }
}
