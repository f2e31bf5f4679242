//! goflow-codec: a sans-I/O decoder for NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011),
//! and packet builders for the same formats.
//!
//! Bytes, the exporter's address and the receive time go in; [`FlowRecord`] views over the
//! datagram's own bytes come out. The codec never touches sockets, clocks or threads, and never
//! allocates per record: a v9/IPFIX template is compiled once into a [`Plan`] (for every schema
//! field, where its bytes are), and a record is read through that plan in place. NetFlow v5 is
//! the same mechanism with one fixed plan.
//!
//! It is not a general IPFIX library: it understands the information elements a flow collector
//! stores (see [`fields`]) and skips every other one, enterprise-specific ones included.
#![forbid(unsafe_code)]

pub mod decoder;
pub mod encode;
pub mod error;
pub mod fields;
pub mod ipfix;
pub mod reader;
pub mod record;
pub mod sampling;
pub mod sequence;
pub mod template;
pub mod v5;
pub mod v9;
pub mod wire;

pub use decoder::{
    DatagramOutcome, Decoder, DecoderConfig, DecoderStats, ExporterSnapshot, SamplingConfig,
    TemplateInfo,
};
pub use error::DecodeError;
pub use record::{AddrMode, FlowRecord, PacketContext, Plan, Slot, TimeKind};
pub use sampling::{Sampling, SamplingSource};

/// Microseconds since 1970-01-01T00:00:00Z: the one time unit above the wire formats.
pub type UnixMicros = i64;
