//! IVF: the simple container of VP8, VP9 and AV1 frames (a 32-byte file header, then a 12-byte
//! header before every frame).
//!
//! [`IvfReader`] streams frames from any [`std::io::Read`], bounded by
//! [`IvfReader::with_max_frame`]; [`IvfWriter`] writes them back. Given the header and frames a
//! reader produced, the writer reproduces the file byte for byte.

use std::io::{Read, Write};

use bytes::Bytes;

use crate::codec::Codec;
use crate::error::{MediaError, Result, read_exact, read_exact_or_eof};
use crate::frame::{MediaFrame, Timebase};

/// Largest frame an [`IvfReader`] accepts by default (8 MiB).
pub const DEFAULT_MAX_IVF_FRAME: usize = 8 << 20;
/// Largest IVF file header accepted (the standard one is 32 bytes).
pub const MAX_IVF_HEADER: usize = 1024;

/// The IVF file header, kept verbatim so a written file matches the one read.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IvfHeader {
    /// Format version (0).
    pub version: u16,
    /// Codec FourCC: `VP80`, `VP90` or `AV01`.
    pub fourcc: [u8; 4],
    /// Picture width in pixels.
    pub width: u16,
    /// Picture height in pixels.
    pub height: u16,
    /// Timebase denominator ("rate").
    pub rate: u32,
    /// Timebase numerator ("scale").
    pub scale: u32,
    /// Number of frames, as the header states it (writers that cannot seek may leave it wrong).
    pub frame_count: u32,
    /// The 4 unused bytes, and any bytes of a header longer than 32 bytes.
    pub trailing: Bytes,
}

impl IvfHeader {
    /// A header for `codec` (VP8, VP9 or AV1) with the given picture size and timebase.
    pub fn new(codec: Codec, width: u16, height: u16, timebase: Timebase) -> Result<Self> {
        let fourcc = match codec {
            Codec::Vp8 => *b"VP80",
            Codec::Vp9 => *b"VP90",
            Codec::Av1 => *b"AV01",
            _ => {
                return Err(MediaError::Unsupported {
                    what: "codec in ivf",
                });
            }
        };
        Ok(IvfHeader {
            version: 0,
            fourcc,
            width,
            height,
            rate: timebase.den,
            scale: timebase.num,
            frame_count: 0,
            trailing: Bytes::from_static(&[0; 4]),
        })
    }

    /// The codec named by the FourCC.
    pub fn codec(&self) -> Result<Codec> {
        match &self.fourcc {
            b"VP80" => Ok(Codec::Vp8),
            b"VP90" => Ok(Codec::Vp9),
            b"AV01" => Ok(Codec::Av1),
            _ => Err(MediaError::Unsupported { what: "ivf fourcc" }),
        }
    }

    /// The timebase of frame timestamps (`scale / rate` seconds per tick).
    pub fn timebase(&self) -> Result<Timebase> {
        Timebase::new(self.scale, self.rate)
    }

    /// Parses a complete header (at least 32 bytes, exactly its declared length).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 32 {
            return Err(MediaError::Truncated { what: "ivf header" });
        }
        if &bytes[..4] != b"DKIF" {
            return Err(MediaError::BadMagic { what: "ivf header" });
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let len = usize::from(u16_at(6));
        if len != bytes.len() {
            return Err(MediaError::Invalid {
                what: "ivf header length",
                value: len as u64,
            });
        }
        let header = IvfHeader {
            version: u16_at(4),
            fourcc: [bytes[8], bytes[9], bytes[10], bytes[11]],
            width: u16_at(12),
            height: u16_at(14),
            rate: u32_at(16),
            scale: u32_at(20),
            frame_count: u32_at(24),
            trailing: Bytes::copy_from_slice(&bytes[28..]),
        };
        header.codec()?;
        header.timebase()?;
        Ok(header)
    }

    /// The header's bytes, as written at the start of a file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = 28 + self.trailing.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(b"DKIF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&self.fourcc);
        out.extend_from_slice(&self.width.to_le_bytes());
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&self.rate.to_le_bytes());
        out.extend_from_slice(&self.scale.to_le_bytes());
        out.extend_from_slice(&self.frame_count.to_le_bytes());
        out.extend_from_slice(&self.trailing);
        out
    }
}

/// Streams frames out of an IVF file.
#[derive(Debug)]
pub struct IvfReader<R> {
    inner: R,
    header: IvfHeader,
    codec: Codec,
    timebase: Timebase,
    max_frame: usize,
}

impl<R: Read> IvfReader<R> {
    /// Reads and checks the file header.
    pub fn new(mut inner: R) -> Result<Self> {
        let mut fixed = [0u8; 32];
        read_exact(&mut inner, &mut fixed, "ivf header")?;
        if &fixed[..4] != b"DKIF" {
            return Err(MediaError::BadMagic { what: "ivf header" });
        }
        let len = usize::from(u16::from_le_bytes([fixed[6], fixed[7]]));
        if len < 32 {
            return Err(MediaError::Invalid {
                what: "ivf header length",
                value: len as u64,
            });
        }
        if len > MAX_IVF_HEADER {
            return Err(MediaError::too_large(
                "ivf header length",
                len,
                MAX_IVF_HEADER,
            ));
        }
        let mut all = fixed.to_vec();
        all.resize(len, 0);
        read_exact(&mut inner, &mut all[32..], "ivf header")?;
        let header = IvfHeader::parse(&all)?;
        let codec = header.codec()?;
        let timebase = header.timebase()?;
        Ok(IvfReader {
            inner,
            header,
            codec,
            timebase,
            max_frame: DEFAULT_MAX_IVF_FRAME,
        })
    }

    /// Sets the largest frame accepted; a larger one is a [`MediaError::TooLarge`].
    pub fn with_max_frame(mut self, max_frame: usize) -> Self {
        self.max_frame = max_frame;
        self
    }

    /// The file header.
    pub fn header(&self) -> &IvfHeader {
        &self.header
    }

    /// The codec of the frames.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The timebase of the frames' `pts`.
    pub fn timebase(&self) -> Timebase {
        self.timebase
    }

    /// The next frame, `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<MediaFrame>> {
        let mut fh = [0u8; 12];
        if !read_exact_or_eof(&mut self.inner, &mut fh, "ivf frame header")? {
            return Ok(None);
        }
        let size = u32::from_le_bytes([fh[0], fh[1], fh[2], fh[3]]) as usize;
        if size > self.max_frame {
            return Err(MediaError::too_large(
                "ivf frame size",
                size,
                self.max_frame,
            ));
        }
        let mut pts = [0u8; 8];
        pts.copy_from_slice(&fh[4..]);
        let pts = u64::from_le_bytes(pts);
        let mut data = vec![0u8; size];
        read_exact(&mut self.inner, &mut data, "ivf frame")?;
        let keyframe = self.codec.is_keyframe(&data)?;
        Ok(Some(MediaFrame {
            pts,
            timestamp: self.timebase.to_time(pts),
            duration: 0,
            keyframe,
            data: Bytes::from(data),
        }))
    }
}

impl<R: Read> Iterator for IvfReader<R> {
    type Item = Result<MediaFrame>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose()
    }
}

/// Writes an IVF file: the header at creation, then one frame per [`IvfWriter::write_frame`].
#[derive(Debug)]
pub struct IvfWriter<W: Write> {
    inner: W,
}

impl<W: Write> IvfWriter<W> {
    /// Writes `header` and returns the writer.
    pub fn new(mut inner: W, header: &IvfHeader) -> Result<Self> {
        inner.write_all(&header.to_bytes())?;
        Ok(IvfWriter { inner })
    }

    /// Writes one frame with its timestamp in ticks of the header's timebase.
    pub fn write_frame(&mut self, pts: u64, data: &[u8]) -> Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| MediaError::too_large("ivf frame size", data.len(), u32::MAX as usize))?;
        self.inner.write_all(&size.to_le_bytes())?;
        self.inner.write_all(&pts.to_le_bytes())?;
        self.inner.write_all(data)?;
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}
