//! Ogg pages (RFC 3533): a bounded, CRC-checked page reader that reassembles packets spanning
//! pages, and a page writer. Used by [`crate::opus`] for Ogg Opus (RFC 7845).

use std::io::{Read, Write};

use bytes::{Bytes, BytesMut};

use crate::error::{MediaError, Result, read_exact, read_exact_or_eof};

/// Page header flag: the page starts with the continuation of a packet.
pub const FLAG_CONTINUED: u8 = 0x01;
/// Page header flag: first page of the logical stream.
pub const FLAG_BOS: u8 = 0x02;
/// Page header flag: last page of the logical stream.
pub const FLAG_EOS: u8 = 0x04;
/// Largest packet a [`PacketReader`] reassembles by default (1 MiB).
pub const DEFAULT_MAX_PACKET: usize = 1 << 20;
/// Granule position meaning "no packet ends on this page".
pub const NO_GRANULE: u64 = u64::MAX;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            k += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// The Ogg CRC-32 (polynomial 0x04c11db7, no reflection, zero initial value) of `data`,
/// continuing from `crc`.
pub fn crc32(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ b) as usize];
    }
    crc
}

/// One Ogg page.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Page {
    /// Header flags ([`FLAG_CONTINUED`], [`FLAG_BOS`], [`FLAG_EOS`]).
    pub flags: u8,
    /// Granule position ([`NO_GRANULE`] when no packet ends on this page).
    pub granule: u64,
    /// Logical stream serial number.
    pub serial: u32,
    /// Page sequence number.
    pub sequence: u32,
    /// Lacing values (at most 255).
    pub segments: Vec<u8>,
    /// The page body.
    pub body: Bytes,
}

impl Page {
    /// Reads one page, checking its capture pattern, version and CRC. `Ok(None)` at a clean end
    /// of input.
    pub fn read(r: &mut impl Read) -> Result<Option<Page>> {
        let mut h = [0u8; 27];
        if !read_exact_or_eof(r, &mut h, "ogg page header")? {
            return Ok(None);
        }
        if &h[..4] != b"OggS" {
            return Err(MediaError::BadMagic { what: "ogg page" });
        }
        if h[4] != 0 {
            return Err(MediaError::Invalid {
                what: "ogg version",
                value: u64::from(h[4]),
            });
        }
        let flags = h[5];
        if flags & !0x07 != 0 {
            return Err(MediaError::Invalid {
                what: "ogg page flags",
                value: u64::from(flags),
            });
        }
        let mut g = [0u8; 8];
        g.copy_from_slice(&h[6..14]);
        let granule = u64::from_le_bytes(g);
        let serial = u32::from_le_bytes([h[14], h[15], h[16], h[17]]);
        let sequence = u32::from_le_bytes([h[18], h[19], h[20], h[21]]);
        let stored = u32::from_le_bytes([h[22], h[23], h[24], h[25]]);
        let mut segments = vec![0u8; usize::from(h[26])];
        read_exact(r, &mut segments, "ogg lacing table")?;
        let body_len: usize = segments.iter().map(|&s| usize::from(s)).sum();
        let mut body = vec![0u8; body_len];
        read_exact(r, &mut body, "ogg page body")?;
        h[22..26].fill(0);
        let computed = crc32(crc32(crc32(0, &h), &segments), &body);
        if computed != stored {
            return Err(MediaError::Checksum { stored, computed });
        }
        Ok(Some(Page {
            flags,
            granule,
            serial,
            sequence,
            segments,
            body: Bytes::from(body),
        }))
    }

    /// The page's bytes with a freshly computed CRC.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(27 + self.segments.len() + self.body.len());
        out.extend_from_slice(b"OggS");
        out.push(0);
        out.push(self.flags);
        out.extend_from_slice(&self.granule.to_le_bytes());
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(self.segments.len() as u8);
        out.extend_from_slice(&self.segments);
        out.extend_from_slice(&self.body);
        let crc = crc32(0, &out);
        out[22..26].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

/// A packet reassembled from one or more pages.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Packet {
    /// The packet's bytes.
    pub data: Bytes,
    /// The granule position of the page this packet ends on.
    pub page_granule: u64,
    /// True when it is the last packet ending on its page (the page's granule is its end).
    pub last_on_page: bool,
    /// True when its page is the last of the stream.
    pub eos: bool,
}

/// Reads the packets of one logical Ogg stream (chained or multiplexed files are rejected).
#[derive(Debug)]
pub struct PacketReader<R> {
    inner: R,
    serial: Option<u32>,
    next_sequence: u32,
    partial: BytesMut,
    in_partial: bool,
    ready: std::collections::VecDeque<Packet>,
    max_packet: usize,
    ended: bool,
}

impl<R: Read> PacketReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R) -> Self {
        PacketReader {
            inner,
            serial: None,
            next_sequence: 0,
            partial: BytesMut::new(),
            in_partial: false,
            ready: Default::default(),
            max_packet: DEFAULT_MAX_PACKET,
            ended: false,
        }
    }

    /// Sets the largest packet reassembled; a larger one is a [`MediaError::TooLarge`].
    pub fn with_max_packet(mut self, max: usize) -> Self {
        self.max_packet = max;
        self
    }

    /// The stream's serial number, once its first page was read.
    pub fn serial(&self) -> Option<u32> {
        self.serial
    }

    /// The next packet, `None` after the end of the stream.
    pub fn next_packet(&mut self) -> Result<Option<Packet>> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Ok(Some(p));
            }
            if self.ended {
                return Ok(None);
            }
            let Some(page) = Page::read(&mut self.inner)? else {
                if self.serial.is_none() {
                    return Err(MediaError::Truncated {
                        what: "ogg stream (no pages)",
                    });
                }
                if self.in_partial {
                    return Err(MediaError::Truncated { what: "ogg packet" });
                }
                self.ended = true;
                continue;
            };
            self.take_page(page)?;
        }
    }

    fn take_page(&mut self, page: Page) -> Result<()> {
        match self.serial {
            None => {
                if page.flags & FLAG_BOS == 0 {
                    return Err(MediaError::Invalid {
                        what: "first ogg page without BOS",
                        value: 0,
                    });
                }
                self.serial = Some(page.serial);
            }
            Some(s) if s != page.serial => {
                return Err(MediaError::Unsupported {
                    what: "chained or multiplexed ogg stream",
                });
            }
            Some(_) => {
                if page.flags & FLAG_BOS != 0 {
                    return Err(MediaError::Invalid {
                        what: "repeated ogg BOS",
                        value: 0,
                    });
                }
            }
        }
        if page.sequence != self.next_sequence {
            return Err(MediaError::Invalid {
                what: "ogg page sequence (page lost)",
                value: u64::from(page.sequence),
            });
        }
        self.next_sequence = self.next_sequence.wrapping_add(1);
        let continued = page.flags & FLAG_CONTINUED != 0;
        if continued != self.in_partial {
            return Err(MediaError::Invalid {
                what: "ogg continuation flag",
                value: u64::from(continued),
            });
        }
        let eos = page.flags & FLAG_EOS != 0;
        let mut off = 0;
        let first_new = self.ready.len();
        for &lace in &page.segments {
            let lace = usize::from(lace);
            if self.partial.len() + lace > self.max_packet {
                return Err(MediaError::too_large(
                    "ogg packet",
                    self.partial.len() + lace,
                    self.max_packet,
                ));
            }
            self.partial.extend_from_slice(&page.body[off..off + lace]);
            off += lace;
            if lace < 255 {
                let data = self.partial.split().freeze();
                self.ready.push_back(Packet {
                    data,
                    page_granule: page.granule,
                    last_on_page: false,
                    eos,
                });
            }
        }
        self.in_partial = page.segments.last() == Some(&255);
        if self.ready.len() > first_new {
            if page.granule == NO_GRANULE {
                return Err(MediaError::Invalid {
                    what: "ogg page ends packets but has no granule",
                    value: page.granule,
                });
            }
            if let Some(last) = self.ready.back_mut() {
                last.last_on_page = true;
            }
        }
        if eos {
            if self.in_partial {
                return Err(MediaError::Truncated {
                    what: "ogg packet at end of stream",
                });
            }
            self.ended = true;
        }
        Ok(())
    }
}

/// Builds Ogg pages for one logical stream and writes them.
#[derive(Debug)]
pub struct PageWriter<W: Write> {
    inner: W,
    serial: u32,
    sequence: u32,
    segments: Vec<u8>,
    body: Vec<u8>,
    continued: bool,
    granule: u64,
    packets_on_page: usize,
}

impl<W: Write> PageWriter<W> {
    /// A writer for the stream `serial`.
    pub fn new(inner: W, serial: u32) -> Self {
        PageWriter {
            inner,
            serial,
            sequence: 0,
            segments: Vec::new(),
            body: Vec::new(),
            continued: false,
            granule: NO_GRANULE,
            packets_on_page: 0,
        }
    }

    /// Bytes in the page being built.
    pub fn pending_body(&self) -> usize {
        self.body.len()
    }

    /// Packets ending in the page being built.
    pub fn pending_packets(&self) -> usize {
        self.packets_on_page
    }

    /// Appends a packet ending at `granule`, spilling onto new pages when the lacing table fills.
    pub fn push_packet(&mut self, data: &[u8], granule: u64) -> Result<()> {
        let mut rest = data;
        let mut first = true;
        loop {
            if self.segments.len() == 255 {
                self.write_page(0)?;
                // The next page continues a packet only if this one was cut.
                self.continued = !first;
            }
            first = false;
            let take = rest.len().min(255);
            self.segments.push(take as u8);
            self.body.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if take < 255 {
                break;
            }
        }
        self.granule = granule;
        self.packets_on_page += 1;
        Ok(())
    }

    /// Writes the page being built (if any) with `extra_flags` (e.g. [`FLAG_BOS`], [`FLAG_EOS`]).
    pub fn flush_page(&mut self, extra_flags: u8) -> Result<()> {
        if self.segments.is_empty() && extra_flags & FLAG_EOS == 0 {
            return Ok(());
        }
        self.write_page(extra_flags)?;
        self.continued = false;
        Ok(())
    }

    /// Overrides the granule of the page being built (the end of its last packet).
    pub fn set_pending_granule(&mut self, granule: u64) {
        self.granule = granule;
    }

    fn write_page(&mut self, extra_flags: u8) -> Result<()> {
        let mut flags = extra_flags;
        if self.continued {
            flags |= FLAG_CONTINUED;
        }
        if self.sequence == 0 {
            flags |= FLAG_BOS;
        }
        let granule = if self.packets_on_page == 0 {
            NO_GRANULE
        } else {
            self.granule
        };
        let page = Page {
            flags,
            granule,
            serial: self.serial,
            sequence: self.sequence,
            segments: std::mem::take(&mut self.segments),
            body: Bytes::from(std::mem::take(&mut self.body)),
        };
        self.inner.write_all(&page.to_bytes())?;
        self.sequence = self.sequence.wrapping_add(1);
        self.packets_on_page = 0;
        Ok(())
    }

    /// Flushes and returns the underlying writer (pending data must have been flushed).
    pub fn into_inner(mut self) -> Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_reference_check_value() {
        // CRC-32, polynomial 0x04c11db7, init 0, no reflection, no final xor: the standard
        // check value over "123456789".
        assert_eq!(crc32(0, b"123456789"), 0x89a1_897f);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0x89a1_897f);
        assert_eq!(crc32(0, b""), 0);
    }

    #[test]
    fn packets_span_pages_and_round_trip() {
        let mut file = Vec::new();
        let mut w = PageWriter::new(&mut file, 7);
        w.push_packet(b"head", 0).unwrap();
        w.flush_page(0).unwrap();
        let big = vec![0xabu8; 255 * 300 + 17];
        w.push_packet(&big, 960).unwrap();
        w.push_packet(b"small", 1920).unwrap();
        w.flush_page(FLAG_EOS).unwrap();
        w.into_inner().unwrap();
        let mut r = PacketReader::new(&file[..]);
        assert_eq!(&r.next_packet().unwrap().unwrap().data[..], b"head");
        let p = r.next_packet().unwrap().unwrap();
        assert_eq!(p.data.len(), big.len());
        assert!(!p.last_on_page);
        let p = r.next_packet().unwrap().unwrap();
        assert_eq!(&p.data[..], b"small");
        assert!(p.last_on_page && p.eos);
        assert_eq!(p.page_granule, 1920);
        assert!(r.next_packet().unwrap().is_none());
        assert_eq!(r.serial(), Some(7));
    }

    #[test]
    fn a_full_lacing_table_at_a_packet_boundary_does_not_mark_continuation() {
        let mut file = Vec::new();
        let mut w = PageWriter::new(&mut file, 3);
        for i in 0..300u32 {
            w.push_packet(&[i as u8], u64::from(i)).unwrap();
        }
        w.flush_page(FLAG_EOS).unwrap();
        let mut r = PacketReader::new(&file[..]);
        for i in 0..300u32 {
            let p = r.next_packet().unwrap().unwrap();
            assert_eq!(&p.data[..], &[i as u8]);
        }
        assert!(r.next_packet().unwrap().is_none());
    }

    #[test]
    fn corrupted_byte_fails_crc() {
        let mut file = Vec::new();
        let mut w = PageWriter::new(&mut file, 1);
        w.push_packet(b"hello", 0).unwrap();
        w.flush_page(FLAG_EOS).unwrap();
        let last = file.len() - 1;
        file[last] ^= 1;
        let mut r = PacketReader::new(&file[..]);
        assert!(matches!(r.next_packet(), Err(MediaError::Checksum { .. })));
    }
}
