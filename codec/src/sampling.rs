//! Sampling rates: where a record's rate comes from, and the per-exporter sampler table that
//! options data fills (v9/IPFIX samplingInterval 34, samplerRandomInterval 50,
//! samplingPacketInterval/Space 305/306, keyed by sampler/selector id 48/302).

/// Where a record's sampling rate was learned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SamplingSource {
    /// No rate known; the rate is stored as 1 (so `SUM(in_bytes * sampling_rate)` counts the
    /// traffic as unsampled rather than as zero).
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
    /// The `sampling:` setting of the collector's config for an exporter that announced none.
    Config,
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
            SamplingSource::Config => "config",
        }
    }
}

/// A record's sampling rate (1 in `rate` packets; never 0: 1 when unknown) and its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampling {
    pub rate: u32,
    pub source: SamplingSource,
}

impl Default for Sampling {
    /// Unknown: rate 1.
    fn default() -> Self {
        Sampling {
            rate: 1,
            source: SamplingSource::Unknown,
        }
    }
}

/// Sampler ids one (exporter, domain) may announce; more are ignored (bounded memory).
pub const SAMPLERS_PER_DOMAIN_MAX: usize = 256;

/// The sampling facts one options data record carried.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SamplerOption {
    /// samplerId 48 / selectorId 302, if the record names one.
    pub sampler_id: Option<u64>,
    /// samplingInterval 34.
    pub interval: Option<u64>,
    /// samplerRandomInterval 50.
    pub random_interval: Option<u64>,
    /// samplingPacketInterval 305.
    pub packet_interval: Option<u64>,
    /// samplingPacketSpace 306.
    pub packet_space: Option<u64>,
    /// samplingTimeInterval / samplingTimeSpace 307 / 308 (microseconds).
    pub time_interval: Option<u64>,
    pub time_space: Option<u64>,
    /// selectorAlgorithm 304 (RFC 5477 section 8.2.1 / the IANA registry).
    pub algorithm: Option<u64>,
    /// samplingSize 309 and samplingPopulation 310: `size` out of every `population`.
    pub size: Option<u64>,
    pub population: Option<u64>,
    /// samplingProbability 311.
    pub probability: Option<f64>,
}

/// selectorAlgorithm values (IANA "Packet Sampling Selection Algorithms", RFC 5477 8.2.1).
pub const ALGORITHM_SYSTEMATIC_COUNT: u64 = 1;
pub const ALGORITHM_SYSTEMATIC_TIME: u64 = 2;
pub const ALGORITHM_RANDOM_N_OUT_OF_N: u64 = 3;
pub const ALGORITHM_UNIFORM_PROBABILISTIC: u64 = 4;

impl SamplerOption {
    /// The rate this record announces (1 in N), if any. selectorAlgorithm (304) picks the
    /// parameters that apply: 1 systematic count-based: (305 + 306) / 305; 2 systematic
    /// time-based: (307 + 308) / 307; 3 random n-out-of-N: 310 / 309; 4 uniform probabilistic:
    /// 1 / 311. Without 304 (or with another algorithm): 34, else 50, else 309/310 (IOS-XR
    /// sends "1 out of 256" as 309/310 next to a 305 of 1), else 305/306, else 311. Zero or
    /// missing parameters announce nothing.
    pub fn rate(&self) -> Option<u32> {
        let count = || ratio(self.packet_interval, self.packet_space);
        let time = || ratio(self.time_interval, self.time_space);
        let n_of_n = || {
            let size = nonzero(self.size)?;
            let population = nonzero(self.population)?;
            Some(clamp_rate((population / size).max(1)))
        };
        let probability = || {
            let p = self.probability.filter(|p| *p > 0.0 && *p <= 1.0)?;
            Some(clamp_rate((1.0 / p).round() as u64))
        };
        match self.algorithm {
            Some(ALGORITHM_SYSTEMATIC_COUNT) => return count().or_else(n_of_n),
            Some(ALGORITHM_SYSTEMATIC_TIME) => return time().or_else(count),
            Some(ALGORITHM_RANDOM_N_OUT_OF_N) => return n_of_n().or_else(count),
            Some(ALGORITHM_UNIFORM_PROBABILISTIC) => return probability().or_else(n_of_n),
            _ => {}
        }
        if let Some(r) = nonzero(self.interval).or(nonzero(self.random_interval)) {
            return Some(clamp_rate(r));
        }
        n_of_n().or_else(count).or_else(probability).or_else(time)
    }
}

fn nonzero(v: Option<u64>) -> Option<u64> {
    v.filter(|&v| v != 0)
}

/// (interval + space) / interval: 1 selected, `space` skipped.
fn ratio(interval: Option<u64>, space: Option<u64>) -> Option<u32> {
    let interval = nonzero(interval)?;
    let space = space.unwrap_or(0);
    Some(clamp_rate(interval.saturating_add(space) / interval))
}

fn clamp_rate(r: u64) -> u32 {
    u32::try_from(r).unwrap_or(u32::MAX)
}

/// The sampler table of one (exporter, domain): rates by sampler id, and the default rate from
/// options data that names no sampler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SamplerTable {
    default: Option<u32>,
    by_id: Vec<(u64, u32)>,
}

impl SamplerTable {
    /// The table's contents (default rate; rates by sampler id), for saving.
    pub fn parts(&self) -> (Option<u32>, &[(u64, u32)]) {
        (self.default, &self.by_id)
    }

    /// A table from saved contents (at most [`SAMPLERS_PER_DOMAIN_MAX`] ids are kept).
    pub fn from_parts(default: Option<u32>, by_id: &[(u64, u32)]) -> SamplerTable {
        SamplerTable {
            default,
            by_id: by_id
                .iter()
                .copied()
                .take(SAMPLERS_PER_DOMAIN_MAX)
                .collect(),
        }
    }

    /// Learns from one options data record. Returns whether it carried a rate.
    pub fn learn(&mut self, opt: &SamplerOption) -> bool {
        let Some(rate) = opt.rate() else {
            return false;
        };
        match opt.sampler_id {
            Some(id) => {
                if let Some(e) = self.by_id.iter_mut().find(|e| e.0 == id) {
                    e.1 = rate;
                } else if self.by_id.len() < SAMPLERS_PER_DOMAIN_MAX {
                    self.by_id.push((id, rate));
                }
            }
            None => self.default = Some(rate),
        }
        true
    }

    /// The exporter's default rate (options data without a sampler id); without one, the rate
    /// of its only sampler when it announced exactly one (IOS-XR scopes its options by
    /// selectorId but does not always put the id in data records).
    pub fn default_sampling(&self) -> Sampling {
        match (self.default, self.by_id.as_slice()) {
            (Some(rate), _) => Sampling {
                rate,
                source: SamplingSource::Exporter,
            },
            (None, [(_, rate)]) => Sampling {
                rate: *rate,
                source: SamplingSource::Sampler,
            },
            _ => Sampling::default(),
        }
    }

    /// The rate of sampler `id`, else the default.
    pub fn lookup(&self, id: u64) -> Sampling {
        match self.by_id.iter().find(|e| e.0 == id) {
            Some(&(_, rate)) => Sampling {
                rate,
                source: SamplingSource::Sampler,
            },
            // A record naming a sampler not announced: only a rate announced for the whole
            // exporter applies, not some other sampler's.
            None => match self.default {
                Some(rate) => Sampling {
                    rate,
                    source: SamplingSource::Exporter,
                },
                None => Sampling::default(),
            },
        }
    }

    /// The record's sampling: its own interval (34/50) wins, then its sampler id, then the
    /// default.
    #[inline]
    pub fn resolve(&self, in_record: Option<u64>, sampler_id: Option<u64>) -> Sampling {
        if let Some(r) = in_record.filter(|&r| r != 0) {
            return Sampling {
                rate: clamp_rate(r),
                source: SamplingSource::Record,
            };
        }
        match sampler_id {
            Some(id) => self.lookup(id),
            None => self.default_sampling(),
        }
    }

    /// Sampler ids known, with their rates.
    pub fn samplers(&self) -> &[(u64, u32)] {
        &self.by_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_each_options_form() {
        let o = |i, r, pi, ps| SamplerOption {
            sampler_id: None,
            interval: i,
            random_interval: r,
            packet_interval: pi,
            packet_space: ps,
            ..SamplerOption::default()
        };
        assert_eq!(o(Some(100), None, None, None).rate(), Some(100));
        assert_eq!(o(Some(0), Some(512), None, None).rate(), Some(512));
        // 1 packet selected, 999 skipped: 1 in 1000.
        assert_eq!(o(None, None, Some(1), Some(999)).rate(), Some(1000));
        assert_eq!(o(None, None, Some(10), Some(90)).rate(), Some(10));
        assert_eq!(o(None, None, Some(0), Some(90)).rate(), None);
        assert_eq!(o(None, None, None, None).rate(), None);
        assert_eq!(o(Some(u64::MAX), None, None, None).rate(), Some(u32::MAX));
    }

    #[test]
    fn record_then_sampler_then_default() {
        let mut t = SamplerTable::default();
        assert_eq!(t.resolve(None, Some(1)), Sampling::default());
        assert!(t.learn(&SamplerOption {
            sampler_id: Some(1),
            interval: Some(100),
            ..SamplerOption::default()
        }));
        assert!(t.learn(&SamplerOption {
            random_interval: Some(10),
            ..SamplerOption::default()
        }));
        assert!(!t.learn(&SamplerOption::default()));
        let s = |rate, source| Sampling { rate, source };
        assert_eq!(t.resolve(None, Some(1)), s(100, SamplingSource::Sampler));
        assert_eq!(t.resolve(None, Some(2)), s(10, SamplingSource::Exporter));
        assert_eq!(t.resolve(None, None), s(10, SamplingSource::Exporter));
        assert_eq!(t.resolve(Some(7), Some(1)), s(7, SamplingSource::Record));
        assert_eq!(t.resolve(Some(0), Some(1)), s(100, SamplingSource::Sampler));
        // Re-announcing sampler 1 replaces its rate.
        t.learn(&SamplerOption {
            sampler_id: Some(1),
            interval: Some(200),
            ..SamplerOption::default()
        });
        assert_eq!(t.samplers(), &[(1, 200)]);
    }

    #[test]
    fn sampler_ids_are_bounded() {
        let mut t = SamplerTable::default();
        for id in 0..(SAMPLERS_PER_DOMAIN_MAX as u64 + 10) {
            t.learn(&SamplerOption {
                sampler_id: Some(id),
                interval: Some(5),
                ..SamplerOption::default()
            });
        }
        assert_eq!(t.samplers().len(), SAMPLERS_PER_DOMAIN_MAX);
    }

    #[test]
    fn rfc5477_selector_options() {
        // IOS-XR: selectorId scope, algorithm 3 (random n-out-of-N), 1 out of 256, and a
        // samplingPacketInterval of 1 that must not make it 1:1.
        let xr = SamplerOption {
            sampler_id: Some(1),
            algorithm: Some(3),
            size: Some(1),
            population: Some(256),
            packet_interval: Some(1),
            ..SamplerOption::default()
        };
        assert_eq!(xr.rate(), Some(256));
        // The same without 305, and without 304.
        let no_305 = SamplerOption {
            packet_interval: None,
            ..xr
        };
        assert_eq!(no_305.rate(), Some(256));
        let no_304 = SamplerOption {
            algorithm: None,
            ..xr
        };
        assert_eq!(no_304.rate(), Some(256));
        // Algorithm 1 (systematic count): interval and space; 309/310 ignored.
        let count = SamplerOption {
            algorithm: Some(1),
            packet_interval: Some(1),
            packet_space: Some(99),
            size: Some(1),
            population: Some(7),
            ..SamplerOption::default()
        };
        assert_eq!(count.rate(), Some(100));
        // Algorithm 4 (uniform probabilistic): 1 / p.
        let prob = SamplerOption {
            algorithm: Some(4),
            probability: Some(0.001),
            ..SamplerOption::default()
        };
        assert_eq!(prob.rate(), Some(1000));
        // Algorithm 2 (systematic time): 100 us on, 900 us off.
        let time = SamplerOption {
            algorithm: Some(2),
            time_interval: Some(100),
            time_space: Some(900),
            ..SamplerOption::default()
        };
        assert_eq!(time.rate(), Some(10));
        // Bad parameters announce nothing.
        let bad = SamplerOption {
            algorithm: Some(4),
            probability: Some(1.5),
            ..SamplerOption::default()
        };
        assert_eq!(bad.rate(), None);
        assert_eq!(
            SamplerOption {
                size: Some(0),
                population: Some(10),
                ..SamplerOption::default()
            }
            .rate(),
            None
        );
    }
}
