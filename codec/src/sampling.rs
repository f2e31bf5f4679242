//! Sampling rates: where a record's rate comes from, and the per-exporter sampler table that
//! options data fills (v9/IPFIX samplingInterval 34, samplerRandomInterval 50,
//! samplingPacketInterval/Space 305/306, keyed by sampler/selector id 48/302).

/// Where a record's sampling rate was learned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SamplingSource {
    /// No rate known; the rate is 0.
    #[default]
    Unknown,
    /// The NetFlow v5 header's sampling_interval field.
    V5Header,
    /// A field inside the data record itself (34 or 50).
    Record,
    /// Options data for the record's sampler/selector id (48/302).
    Sampler,
    /// Options data without a sampler id: the exporter's (domain's) default rate.
    Exporter,
}

impl SamplingSource {
    /// Stable name for JSON and the ops API.
    pub fn as_str(&self) -> &'static str {
        match self {
            SamplingSource::Unknown => "unknown",
            SamplingSource::V5Header => "v5_header",
            SamplingSource::Record => "record",
            SamplingSource::Sampler => "sampler",
            SamplingSource::Exporter => "exporter",
        }
    }
}

/// A record's sampling rate (1 in `rate` packets; 0 = unknown) and its source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sampling {
    pub rate: u32,
    pub source: SamplingSource,
}
