//! goflow: a NetFlow v5/v9 and IPFIX collector.
//!
//! The data path, one module per step: [`ingest`] receives datagrams in batches (io_uring or
//! recvmmsg), [`pipeline`] decodes them with goflow-codec and encodes every record into each
//! backend's buffer (goflow-writers), and the writers ship those buffers. [`ops`] publishes
//! counters and latency histograms. `main.rs` only parses the command line and dispatches to
//! [`cmd`].
#![deny(unsafe_code)]

pub mod cli;
pub mod cmd;
pub mod config;
pub mod consume;
pub mod exit;
pub mod grafana;
pub mod ingest;
pub mod notify;
pub mod ops;
pub mod pcap;
pub mod pipeline;
pub mod sendmmsg;
pub mod state;
