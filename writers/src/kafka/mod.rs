//! The Kafka backend: flows published to a topic as goflow2's `FlowMessage` protobuf or as JSON
//! lines. [`encode`] is pure (records in, framed rows out; always built); the producer in
//! `sink` needs librdkafka and is built with the `kafka` cargo feature (on by default).
//!
//! A chunk's rows are *framed* flows (see [`encode`]): each carries the Kafka message key it
//! belongs under and the bytes that go into a message value. The sink groups up to
//! `flows_per_message` flows of one key into one Kafka message, so a message value is several
//! varint-delimited `FlowMessage`s (or JSON lines) back to back; `flows_per_message: 1` is
//! exactly goflow2's output (one delimited `FlowMessage` per message).

use std::fmt;
use std::path::PathBuf;

pub mod encode;
#[cfg(feature = "kafka")]
pub mod sink;

pub use encode::KafkaEncoder;
/// The librdkafka binding the producer is built on, for goflow's Kafka frontend (one copy of
/// the library and its build settings).
#[cfg(feature = "kafka")]
pub use rdkafka;

/// Flows per Kafka message by default: large enough that the per-message cost of the producer
/// and the broker (a record header, a delivery report) is small against the flows' bytes
/// (~100 B each in protobuf), small enough that a message stays far below the broker's 1 MB
/// `message.max.bytes` in JSON (~600 B a flow).
pub const DEFAULT_FLOWS_PER_MESSAGE: usize = 64;
/// Most flows in one message (`flows_per_message` above it is a config error).
pub const FLOWS_PER_MESSAGE_MAX: usize = 1000;
/// A message value is closed before it would grow past this many bytes, whatever
/// `flows_per_message` says (librdkafka's `message.max.bytes` is 1,000,000 by default).
pub const MESSAGE_BYTES_MAX: usize = 900_000;
/// Flushes a lane keeps in flight by default (`flushes_in_flight`): a flush is done when every
/// message of it is acknowledged, and with acks taking 10-1000 ms under load one flush at a
/// time idles the producer (see perf/README.md, Kafka). With `key: exporter` an exporter's
/// flows still reach their partition in order: one lane, one producer, flushes sent in order.
pub const DEFAULT_FLUSHES_IN_FLIGHT: usize = 8;
/// Most `flushes_in_flight` (beyond it is a config error).
pub const FLUSHES_IN_FLIGHT_MAX: usize = 64;
/// librdkafka's `linger.ms` by default: how long the producer waits to fill a batch.
pub const DEFAULT_LINGER_MS: u32 = 5;
/// librdkafka's `batch.size` by default, bytes per partition batch (its own default, 1 MB).
pub const DEFAULT_BATCH_BYTES: u32 = 1_000_000;

/// `format:`: what a flow looks like in a message value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// goflow2's `FlowMessage`, each one prefixed by its length as a varint (protodelim).
    #[default]
    Protobuf,
    /// One JSON object per flow with the schema's column names, newline-terminated (the file
    /// backend's lines).
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "protobuf" | "pb" | "proto" => Some(Format::Protobuf),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Protobuf => "protobuf",
            Format::Json => "json",
        }
    }
}

/// `key:`: the Kafka message key, which picks the partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyBy {
    /// The exporter's address (4 or 16 bytes): one exporter's flows stay in order in one
    /// partition.
    #[default]
    Exporter,
    /// A hash of the 5-tuple, folded into [`encode::FLOW_KEY_BUCKETS`] buckets (8-byte key):
    /// spreads one big exporter over the partitions while a connection's flows stay together.
    Flow,
    /// No key: librdkafka's sticky partitioner.
    None,
}

impl KeyBy {
    pub fn parse(s: &str) -> Option<KeyBy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "exporter" => Some(KeyBy::Exporter),
            "flow" => Some(KeyBy::Flow),
            "none" | "" => Some(KeyBy::None),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyBy::Exporter => "exporter",
            KeyBy::Flow => "flow",
            KeyBy::None => "none",
        }
    }
}

/// `compression:` (librdkafka's `compression.type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    None,
    #[default]
    Lz4,
    Zstd,
    Snappy,
    Gzip,
}

impl Compression {
    pub fn parse(s: &str) -> Option<Compression> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" | "" => Some(Compression::None),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd),
            "snappy" => Some(Compression::Snappy),
            "gzip" => Some(Compression::Gzip),
            _ => None,
        }
    }

    /// The value of librdkafka's `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
        }
    }
}

/// A Kafka backend's settings, environment applied (the daemon's config resolves them).
/// `Debug` never shows the password or a secret-looking `rdkafka` property.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]` (`KAFKA_SERVER`).
    pub server: String,
    /// Topic to publish to (`KAFKA_TOPIC`).
    pub topic: String,
    /// SASL user (`SASL_USER`); SASL is on when it is set.
    pub sasl_user: Option<String>,
    /// SASL password (`SASL_PASSWORD`). Never logged or shown.
    pub sasl_password: Option<String>,
    /// PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512.
    pub sasl_mechanism: String,
    /// TLS to the brokers (`SSL`).
    pub ssl: bool,
    /// Verify the brokers' certificates (`SSL_VERIFY`, default true).
    pub ssl_verify: bool,
    /// CA bundle to verify them with (default: the system's).
    pub ssl_ca_file: Option<PathBuf>,
    pub format: Format,
    pub key: KeyBy,
    pub compression: Compression,
    /// Flows per Kafka message (1 = goflow2's one FlowMessage per message).
    pub flows_per_message: usize,
    /// librdkafka `linger.ms`.
    pub linger_ms: u32,
    /// librdkafka `batch.size`, bytes.
    pub batch_bytes: u32,
    /// Writer lanes (threads) sharing the backend's one producer, so one lane's wait for its
    /// acknowledgements does not idle the producer.
    pub lanes: usize,
    /// Any other librdkafka property, set last (overrides the above).
    pub rdkafka: Vec<(String, String)>,
}

/// Writer lanes of a Kafka backend by default: while one waits for its flush's delivery
/// reports, the other fills the producer.
pub const DEFAULT_LANES: usize = 2;

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            server: String::new(),
            topic: String::new(),
            sasl_user: None,
            sasl_password: None,
            sasl_mechanism: "PLAIN".to_owned(),
            ssl: false,
            ssl_verify: true,
            ssl_ca_file: None,
            format: Format::default(),
            key: KeyBy::default(),
            compression: Compression::default(),
            flows_per_message: DEFAULT_FLOWS_PER_MESSAGE,
            linger_ms: DEFAULT_LINGER_MS,
            batch_bytes: DEFAULT_BATCH_BYTES,
            lanes: DEFAULT_LANES,
            rdkafka: Vec::new(),
        }
    }
}

/// Whether a librdkafka property holds a secret (its value is never shown).
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "ssl.key",
        "oauthbearer",
        "jaas",
        "sasl.username",
    ]
    .iter()
    .any(|s| n.contains(s))
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: Vec<(&str, &str)> = self
            .rdkafka
            .iter()
            .map(|(k, v)| {
                if is_secret_property(k) {
                    (k.as_str(), "<hidden>")
                } else {
                    (k.as_str(), v.as_str())
                }
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("server", &self.server)
            .field("topic", &self.topic)
            .field("sasl_user", &self.sasl_user)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<hidden>"),
            )
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("ssl", &self.ssl)
            .field("ssl_verify", &self.ssl_verify)
            .field("ssl_ca_file", &self.ssl_ca_file)
            .field("format", &self.format)
            .field("key", &self.key)
            .field("compression", &self.compression)
            .field("flows_per_message", &self.flows_per_message)
            .field("linger_ms", &self.linger_ms)
            .field("batch_bytes", &self.batch_bytes)
            .field("lanes", &self.lanes)
            .field("rdkafka", &props)
            .finish()
    }
}

impl KafkaConfig {
    /// Where it writes, for logs and status (no secrets).
    pub fn target(&self) -> String {
        format!("{} topic {}", self.server, self.topic)
    }

    /// librdkafka's `security.protocol` for these settings.
    pub fn security_protocol(&self) -> &'static str {
        match (self.ssl, self.sasl_user.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    /// The producer's librdkafka properties, in the order they are set (passthrough last).
    /// Includes the SASL password: for the client only, never for logs.
    pub fn producer_properties(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: String| p.push((k.to_owned(), v));
        set("bootstrap.servers", self.server.clone());
        // Every message acknowledged by all in-sync replicas, written once per producer
        // session even when librdkafka retries (idempotence keeps order with up to 5 requests
        // in flight per broker).
        set("acks", "all".to_owned());
        set("enable.idempotence", "true".to_owned());
        set("compression.type", self.compression.name().to_owned());
        set("linger.ms", self.linger_ms.to_string());
        set("batch.size", self.batch_bytes.to_string());
        // A batch may hold many small messages (one flow each with flows_per_message: 1).
        set("batch.num.messages", "100000".to_owned());
        // librdkafka's own queue (what waits for a batch or an ack): the backend's queue
        // already bounds what is in front of the producer, so room for a second's worth.
        set("queue.buffering.max.messages", "1000000".to_owned());
        set("queue.buffering.max.kbytes", "1048576".to_owned());
        // A delivery that cannot complete within this reports an error (then the flush fails
        // and the backend retries it): a dead broker is noticed in bounded time.
        set(
            "message.timeout.ms",
            sink_timeouts::MESSAGE_TIMEOUT_MS.to_string(),
        );
        set("security.protocol", self.security_protocol().to_owned());
        if let Some(user) = &self.sasl_user {
            set("sasl.mechanisms", self.sasl_mechanism.clone());
            set("sasl.username", user.clone());
            set(
                "sasl.password",
                self.sasl_password.clone().unwrap_or_default(),
            );
        }
        if self.ssl {
            set(
                "enable.ssl.certificate.verification",
                self.ssl_verify.to_string(),
            );
            if !self.ssl_verify {
                set("ssl.endpoint.identification.algorithm", "none".to_owned());
            }
            if let Some(ca) = &self.ssl_ca_file {
                set("ssl.ca.location", ca.display().to_string());
            }
        }
        for (k, v) in &self.rdkafka {
            set(k, v.clone());
        }
        p
    }
}

/// The producer's timeouts.
pub mod sink_timeouts {
    /// librdkafka `message.timeout.ms`: the longest a message may wait for its delivery.
    pub const MESSAGE_TIMEOUT_MS: u64 = 30_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_pick_the_security_protocol_and_hide_secrets() {
        let c = KafkaConfig {
            server: "k1:9092".to_owned(),
            topic: "flows".to_owned(),
            sasl_user: Some("u".to_owned()),
            sasl_password: Some("hunter2".to_owned()),
            sasl_mechanism: "SCRAM-SHA-512".to_owned(),
            ssl: true,
            ssl_verify: false,
            ssl_ca_file: Some("/etc/ca.pem".into()),
            rdkafka: vec![
                ("client.id".to_owned(), "me".to_owned()),
                ("ssl.key.password".to_owned(), "s3cret".to_owned()),
            ],
            ..KafkaConfig::default()
        };
        let p = c.producer_properties();
        let get = |k: &str| {
            p.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.password"), Some("hunter2"));
        assert_eq!(get("enable.ssl.certificate.verification"), Some("false"));
        assert_eq!(get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(get("acks"), Some("all"));
        assert_eq!(get("enable.idempotence"), Some("true"));
        assert_eq!(get("compression.type"), Some("lz4"));
        assert_eq!(get("client.id"), Some("me"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("client.id"), "{shown}");

        let plain = KafkaConfig::default();
        assert_eq!(plain.security_protocol(), "plaintext");
        assert!(
            !plain
                .producer_properties()
                .iter()
                .any(|(k, _)| k.starts_with("sasl."))
        );
    }

    #[test]
    fn names_parse_back() {
        for f in [Format::Protobuf, Format::Json] {
            assert_eq!(Format::parse(f.name()), Some(f));
        }
        for k in [KeyBy::Exporter, KeyBy::Flow, KeyBy::None] {
            assert_eq!(KeyBy::parse(k.name()), Some(k));
        }
        for c in [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
            Compression::Gzip,
        ] {
            assert_eq!(Compression::parse(c.name()), Some(c));
        }
        assert_eq!(Format::parse("xml"), None);
    }
}
