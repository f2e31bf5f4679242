//! goflow-writers: the flow schema and what turns record views into bytes for each backend.
//!
//! Each backend is split in two: a pure *encoder* (record views in, wire bytes out; byte-exact
//! golden tests) and a *sink* that ships encoded buffers over a connection. Every encoder and
//! every DDL statement walks [`schema::COLUMNS`]; no column name is written twice.
//!
//! Not here: receiving, decoding (goflow-codec), or anything that decides what to store.
#![forbid(unsafe_code)]

pub mod backend;
pub mod durable;
pub mod file;
pub mod json;
pub mod kafka;
#[cfg(feature = "mysql")]
pub mod mysql;
pub mod pg;
pub mod schema;
pub mod sink;
pub mod spool;
