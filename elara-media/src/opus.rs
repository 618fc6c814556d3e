//! Ogg Opus (RFC 7845): the `OpusHead` and `OpusTags` headers are kept verbatim, every audio
//! packet gets its start and end granule position, and the writer reproduces the same packets
//! with the same granule positions.

use std::io::{Read, Write};

use bytes::Bytes;

use crate::codec::opus_packet_samples;
use crate::error::{MediaError, Result};
use crate::frame::{MediaFrame, Timebase};
use crate::ogg::{FLAG_EOS, Packet, PacketReader, PageWriter};

/// Opus timestamps tick at 48 kHz.
pub const OPUS_TIMEBASE: Timebase = Timebase {
    num: 1,
    den: 48_000,
};
/// Most packets an [`OpusWriter`] puts on one page.
pub const PACKETS_PER_PAGE: usize = 50;

/// The parsed fields of an `OpusHead` packet, with the raw packet kept for rewriting.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OpusHead {
    /// Output channel count.
    pub channels: u8,
    /// Samples (at 48 kHz) to discard from the decoder's output at the start.
    pub pre_skip: u16,
    /// Sample rate of the original input (informational).
    pub input_rate: u32,
    /// Output gain in Q7.8 dB.
    pub gain: i16,
    /// Channel mapping family.
    pub mapping_family: u8,
    /// The packet as read.
    pub raw: Bytes,
}

impl OpusHead {
    /// Parses and checks an `OpusHead` packet.
    pub fn parse(raw: Bytes) -> Result<Self> {
        if raw.len() < 19 {
            return Err(MediaError::Truncated { what: "OpusHead" });
        }
        if &raw[..8] != b"OpusHead" {
            return Err(MediaError::BadMagic { what: "OpusHead" });
        }
        if raw[8] & 0xf0 != 0 {
            return Err(MediaError::Unsupported {
                what: "OpusHead major version",
            });
        }
        let channels = raw[9];
        if channels == 0 {
            return Err(MediaError::Invalid {
                what: "OpusHead channel count",
                value: 0,
            });
        }
        Ok(OpusHead {
            channels,
            pre_skip: u16::from_le_bytes([raw[10], raw[11]]),
            input_rate: u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]),
            gain: i16::from_le_bytes([raw[16], raw[17]]),
            mapping_family: raw[18],
            raw,
        })
    }
}

/// Streams the audio packets of an Ogg Opus file.
#[derive(Debug)]
pub struct OpusReader<R> {
    packets: PacketReader<R>,
    head: OpusHead,
    tags: Bytes,
    page: Vec<Packet>,
    out: std::collections::VecDeque<MediaFrame>,
    /// End granule of the last packet produced (`None` before the first audio page).
    cursor: Option<u64>,
}

impl<R: Read> OpusReader<R> {
    /// Reads the `OpusHead` and `OpusTags` headers.
    pub fn new(inner: R) -> Result<Self> {
        let mut packets = PacketReader::new(inner);
        let head = packets
            .next_packet()?
            .ok_or(MediaError::Truncated { what: "OpusHead" })?;
        if !head.last_on_page || head.page_granule != 0 {
            return Err(MediaError::Invalid {
                what: "OpusHead page",
                value: head.page_granule,
            });
        }
        let head = OpusHead::parse(head.data)?;
        let tags = packets
            .next_packet()?
            .ok_or(MediaError::Truncated { what: "OpusTags" })?;
        if tags.data.len() < 16 {
            return Err(MediaError::Truncated { what: "OpusTags" });
        }
        if &tags.data[..8] != b"OpusTags" {
            return Err(MediaError::BadMagic { what: "OpusTags" });
        }
        if !tags.last_on_page {
            return Err(MediaError::Invalid {
                what: "OpusTags page",
                value: tags.page_granule,
            });
        }
        Ok(OpusReader {
            packets,
            head,
            tags: tags.data,
            page: Vec::new(),
            out: Default::default(),
            cursor: None,
        })
    }

    /// The `OpusHead` header.
    pub fn head(&self) -> &OpusHead {
        &self.head
    }

    /// The raw `OpusTags` packet.
    pub fn tags(&self) -> &Bytes {
        &self.tags
    }

    /// The Ogg serial number of the stream.
    pub fn serial(&self) -> u32 {
        self.packets.serial().unwrap_or(0)
    }

    /// The next audio packet as a frame (`pts` = start granule, `duration` in 48 kHz samples).
    pub fn next_frame(&mut self) -> Result<Option<MediaFrame>> {
        loop {
            if let Some(f) = self.out.pop_front() {
                return Ok(Some(f));
            }
            let Some(p) = self.packets.next_packet()? else {
                if !self.page.is_empty() {
                    return Err(MediaError::Truncated {
                        what: "ogg opus page",
                    });
                }
                return Ok(None);
            };
            let last = p.last_on_page;
            self.page.push(p);
            if last {
                self.finish_page()?;
            }
        }
    }

    fn finish_page(&mut self) -> Result<()> {
        let page = std::mem::take(&mut self.page);
        let durations = page
            .iter()
            .map(|p| opus_packet_samples(&p.data))
            .collect::<Result<Vec<u32>>>()?;
        let total: u64 = durations.iter().map(|&d| u64::from(d)).sum();
        let Some(last) = page.last() else {
            return Ok(());
        };
        let granule = last.page_granule;
        let eos = last.eos;
        let mut start = match self.cursor {
            Some(c) => c,
            None if eos && granule < total => 0,
            None => granule.checked_sub(total).ok_or(MediaError::Invalid {
                what: "ogg opus first granule position",
                value: granule,
            })?,
        };
        let n = page.len();
        for (i, (p, d)) in page.into_iter().zip(durations).enumerate() {
            let mut end = start.checked_add(u64::from(d)).ok_or(MediaError::Invalid {
                what: "ogg opus granule position",
                value: start,
            })?;
            if i + 1 == n {
                if granule != end && !(eos && granule >= start && granule < end) {
                    return Err(MediaError::Invalid {
                        what: "ogg opus granule position",
                        value: granule,
                    });
                }
                end = granule;
            }
            self.out.push_back(MediaFrame {
                pts: start,
                timestamp: OPUS_TIMEBASE.to_time(start),
                duration: end - start,
                keyframe: true,
                data: p.data,
            });
            start = end;
        }
        self.cursor = Some(start);
        Ok(())
    }
}

impl<R: Read> Iterator for OpusReader<R> {
    type Item = Result<MediaFrame>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose()
    }
}

/// Writes an Ogg Opus file: the headers at creation, then packets, then an end-of-stream page.
#[derive(Debug)]
pub struct OpusWriter<W: Write> {
    pages: PageWriter<W>,
}

impl<W: Write> OpusWriter<W> {
    /// Writes the `OpusHead` (alone on the first page) and `OpusTags` packets.
    pub fn new(inner: W, serial: u32, head: &[u8], tags: &[u8]) -> Result<Self> {
        OpusHead::parse(Bytes::copy_from_slice(head))?;
        let mut pages = PageWriter::new(inner, serial);
        pages.push_packet(head, 0)?;
        pages.flush_page(0)?;
        pages.push_packet(tags, 0)?;
        pages.flush_page(0)?;
        Ok(OpusWriter { pages })
    }

    /// Writes one audio packet that ends at granule position `end_granule`.
    pub fn write_packet(&mut self, data: &[u8], end_granule: u64) -> Result<()> {
        if self.pages.pending_packets() >= PACKETS_PER_PAGE || self.pages.pending_body() >= 8192 {
            self.pages.flush_page(0)?;
        }
        self.pages.push_packet(data, end_granule)
    }

    /// Writes the last page (flagged end-of-stream). `end_granule`, when given, replaces the end
    /// of the last packet (end trimming, RFC 7845 §4.5).
    pub fn finish(mut self, end_granule: Option<u64>) -> Result<W> {
        if let Some(g) = end_granule
            && self.pages.pending_packets() > 0
        {
            self.pages.set_pending_granule(g);
        }
        self.pages.flush_page(FLAG_EOS)?;
        self.pages.into_inner()
    }
}
