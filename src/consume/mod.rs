//! The Kafka frontend (`frontends.kafka`): goflow as a member of a Kafka consumer group that
//! loads the database, beside or instead of the NetFlow/IPFIX listener. Messages are decoded
//! by [`decode`] (goflow2's `FlowMessage` protobuf, goflow's JSON lines) into plain flow
//! records, which go through the same encoders, backends and lanes as the UDP frontend's; the
//! consumer (`consumer.rs`, built with the `kafka` feature) keeps the partitions' offsets in
//! the rows' own transactions, so a SQL backend stores every flow exactly once.

pub mod decode;
pub mod stats;

#[cfg(feature = "kafka")]
mod consumer;

#[cfg(feature = "kafka")]
pub use consumer::{ConsumerFrontend, Output, consumer_properties};
pub use stats::{ConsumerStats, PartitionStatus};
