use thiserror::Error;

/// Why a container, bitstream or header could not be read or written.
///
/// Nothing read from a file or received from the network panics: every malformed, truncated or
/// oversized input ends in one of these variants. [`MediaError::Io`] wraps errors of the
/// underlying reader or writer; every other variant describes the bytes themselves.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The underlying reader or writer failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The input ended in the middle of a structure.
    #[error("truncated {what}")]
    Truncated {
        /// The structure that was cut short.
        what: &'static str,
    },
    /// A structure does not start with its magic bytes.
    #[error("bad magic in {what}")]
    BadMagic {
        /// The structure whose magic was wrong.
        what: &'static str,
    },
    /// An Ogg page's CRC does not match its contents.
    #[error("ogg page checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC stored in the page header.
        stored: u32,
        /// CRC computed over the page.
        computed: u32,
    },
    /// A length or count exceeds its documented cap.
    #[error("{what} is {len}, above the limit of {max}")]
    TooLarge {
        /// Which length or count.
        what: &'static str,
        /// The value found.
        len: u64,
        /// The cap it exceeded.
        max: u64,
    },
    /// A field holds a value outside its domain.
    #[error("invalid {what}: {value}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The offending raw value.
        value: u64,
    },
    /// The input is well formed but uses a feature this crate does not handle.
    #[error("unsupported {what}")]
    Unsupported {
        /// The feature.
        what: &'static str,
    },
    /// The file is none of the container formats this crate reads.
    #[error("unknown container format")]
    UnknownFormat,
}

impl MediaError {
    pub(crate) fn too_large(what: &'static str, len: usize, max: usize) -> Self {
        MediaError::TooLarge {
            what,
            len: len as u64,
            max: max as u64,
        }
    }
}

/// Result with a [`MediaError`].
pub type Result<T> = std::result::Result<T, MediaError>;

/// Fills `buf` from `r`. Returns `Ok(false)` on a clean end of input before the first byte,
/// [`MediaError::Truncated`] when the input ends part-way.
pub(crate) fn read_exact_or_eof(
    r: &mut impl std::io::Read,
    buf: &mut [u8],
    what: &'static str,
) -> Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(MediaError::Truncated { what }),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Like [`read_exact_or_eof`] but an end of input before the first byte is also truncation.
pub(crate) fn read_exact(
    r: &mut impl std::io::Read,
    buf: &mut [u8],
    what: &'static str,
) -> Result<()> {
    if read_exact_or_eof(r, buf, what)? {
        Ok(())
    } else {
        Err(MediaError::Truncated { what })
    }
}
