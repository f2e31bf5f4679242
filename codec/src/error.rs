//! The decoder's error type: small, `Copy`, allocation-free, so the hot path can return it.

use std::fmt;

/// Why a datagram (or the rest of it) could not be decoded. Records decoded before the error
/// stay decoded; the caller counts the error by [`DecodeError::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the structure needs. `what` names the structure.
    Truncated { what: &'static str },
    /// The version field is not 5, 9 or 10.
    UnsupportedVersion { version: u16 },
    /// A length or count field contradicts the bytes present.
    BadLength { what: &'static str },
    /// A template or set is well-formed but refused (limits, field count, zero-length fields).
    BadTemplate { what: &'static str },
}

impl DecodeError {
    /// A stable short name for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::BadLength { .. } => "bad_length",
            DecodeError::BadTemplate { .. } => "bad_template",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { what } => write!(f, "truncated {what}"),
            DecodeError::UnsupportedVersion { version } => {
                write!(f, "unsupported NetFlow/IPFIX version {version}")
            }
            DecodeError::BadLength { what } => write!(f, "bad length in {what}"),
            DecodeError::BadTemplate { what } => write!(f, "template refused: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}
