//! What a receiver must know to rebuild a file or feed a decoder: the codec, the timebase and
//! the container's own header (`OpusHead`/`OpusTags`, the IVF header, the WAV format).
//!
//! A [`TrackHeader`] travels in-band (see [`crate::packet`]) in a small, versioned, bounded
//! encoding: [`TrackHeader::encode`] / [`TrackHeader::decode`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::Codec;
use crate::error::{MediaError, Result};
use crate::frame::Timebase;
use crate::ivf::{IvfHeader, MAX_IVF_HEADER};
use crate::wav::WavFormat;

/// Largest `OpusHead` carried in a header.
pub const MAX_OPUS_HEAD: usize = 1024;
/// Largest `OpusTags` carried in a header (64 KiB).
pub const MAX_OPUS_TAGS: usize = 64 * 1024;
const MAGIC: &[u8; 4] = b"EMTH";
const VERSION: u8 = 1;

/// The container a track was read from and will be written to, with its header.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ContainerConfig {
    /// Ogg Opus: the stream serial and the two header packets, verbatim.
    OggOpus {
        /// Ogg logical stream serial number.
        serial: u32,
        /// The `OpusHead` packet.
        head: Bytes,
        /// The `OpusTags` packet.
        tags: Bytes,
    },
    /// IVF with its file header.
    Ivf(IvfHeader),
    /// H.264 Annex B byte stream (parameter sets travel in-band).
    AnnexB,
    /// PCM16 WAV.
    Wav(WavFormat),
}

/// Codec, timebase and container header of one track.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TrackHeader {
    /// The codec of every frame.
    pub codec: Codec,
    /// The timebase of frame `pts`.
    pub timebase: Timebase,
    /// The container and its header.
    pub container: ContainerConfig,
}

impl TrackHeader {
    /// The header's bytes.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_slice(MAGIC);
        b.put_u8(VERSION);
        b.put_u8(self.codec.as_u8());
        b.put_u32_le(self.timebase.num);
        b.put_u32_le(self.timebase.den);
        match &self.container {
            ContainerConfig::OggOpus { serial, head, tags } => {
                b.put_u8(1);
                b.put_u32_le(*serial);
                b.put_u32_le(head.len() as u32);
                b.put_slice(head);
                b.put_u32_le(tags.len() as u32);
                b.put_slice(tags);
            }
            ContainerConfig::Ivf(h) => {
                b.put_u8(2);
                let bytes = h.to_bytes();
                b.put_u32_le(bytes.len() as u32);
                b.put_slice(&bytes);
            }
            ContainerConfig::AnnexB => b.put_u8(3),
            ContainerConfig::Wav(f) => {
                b.put_u8(4);
                b.put_u16_le(f.channels);
                b.put_u32_le(f.sample_rate);
            }
        }
        b.freeze()
    }

    /// Parses bytes made by [`TrackHeader::encode`]; every length is capped.
    pub fn decode(bytes: &[u8]) -> Result<TrackHeader> {
        let mut r = Cursor {
            data: bytes,
            pos: 0,
        };
        if r.take(4)? != MAGIC {
            return Err(MediaError::BadMagic {
                what: "track header",
            });
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(MediaError::Unsupported {
                what: "track header version",
            });
        }
        let codec_num = r.u8()?;
        let codec = Codec::from_u8(codec_num).ok_or(MediaError::Invalid {
            what: "codec",
            value: u64::from(codec_num),
        })?;
        let timebase = Timebase::new(r.u32()?, r.u32()?)?;
        let tag = r.u8()?;
        let container = match tag {
            1 => {
                let serial = r.u32()?;
                let head = r.blob(MAX_OPUS_HEAD, "OpusHead")?;
                let tags = r.blob(MAX_OPUS_TAGS, "OpusTags")?;
                crate::opus::OpusHead::parse(Bytes::copy_from_slice(head))?;
                ContainerConfig::OggOpus {
                    serial,
                    head: Bytes::copy_from_slice(head),
                    tags: Bytes::copy_from_slice(tags),
                }
            }
            2 => ContainerConfig::Ivf(IvfHeader::parse(r.blob(MAX_IVF_HEADER, "ivf header")?)?),
            3 => ContainerConfig::AnnexB,
            4 => {
                let channels = r.u16()?;
                let sample_rate = r.u32()?;
                if channels == 0 || sample_rate == 0 {
                    return Err(MediaError::Invalid {
                        what: "wav format",
                        value: 0,
                    });
                }
                ContainerConfig::Wav(WavFormat {
                    channels,
                    sample_rate,
                })
            }
            t => {
                return Err(MediaError::Invalid {
                    what: "container tag",
                    value: u64::from(t),
                });
            }
        };
        if r.pos != bytes.len() {
            return Err(MediaError::Invalid {
                what: "trailing bytes in track header",
                value: (bytes.len() - r.pos) as u64,
            });
        }
        Ok(TrackHeader {
            codec,
            timebase,
            container,
        })
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or(MediaError::Truncated {
            what: "track header",
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn blob(&mut self, max: usize, what: &'static str) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(MediaError::too_large(what, len, max));
        }
        self.take(len)
    }
}
