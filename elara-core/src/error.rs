use thiserror::Error;

/// Why bytes could not be turned into a [`crate::Message`].
///
/// [`DecodeError::Incomplete`] is not a protocol violation: the caller should wait for more bytes
/// and try again. Every other variant means the peer sent something malformed and the connection
/// it came on should be closed (the node keeps serving its other peers).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes are needed; at least `needed` more than were given.
    #[error("incomplete frame: at least {needed} more bytes needed")]
    Incomplete {
        /// Lower bound on the number of additional bytes required.
        needed: usize,
    },
    /// The frame's version byte is not one this build understands.
    #[error("unsupported wire version {0} (this build speaks version {v})", v = crate::wire::VERSION)]
    UnsupportedVersion(u8),
    /// The frame's message type is unknown.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// A length or count exceeds its documented cap.
    #[error("{what} is {len}, above the limit of {max}")]
    TooLarge {
        /// Which field was too large.
        what: &'static str,
        /// The value found on the wire.
        len: u64,
        /// The cap it exceeded.
        max: u64,
    },
    /// A field holds a value outside its domain (an enum tag, a flag combination, ...).
    #[error("invalid {what}: {value}")]
    Invalid {
        /// Which field was invalid.
        what: &'static str,
        /// The offending raw value.
        value: u64,
    },
    /// The body length declared in the frame header disagrees with what the body contains.
    #[error("frame body length mismatch: header says {declared} bytes, message used {used}")]
    LengthMismatch {
        /// Length declared in the header.
        declared: usize,
        /// Bytes the message actually consumed.
        used: usize,
    },
}

impl DecodeError {
    /// True when the error only means "wait for more bytes".
    pub fn is_incomplete(&self) -> bool {
        matches!(self, DecodeError::Incomplete { .. })
    }
}
