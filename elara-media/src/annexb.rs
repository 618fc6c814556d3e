//! H.264 Annex B byte streams: split into access units (one coded picture with its parameter
//! sets and SEI), keyframes from IDR slices.
//!
//! An access unit is cut (ITU-T H.264 §7.4.1.2.3) before an access unit delimiter, SPS, PPS,
//! SEI or NAL unit of type 14–18, or before a slice whose `first_mb_in_slice` is 0, whenever the
//! access unit so far holds a slice. Each [`MediaFrame`] keeps its bytes exactly as in the file,
//! start codes included (leading zero bytes go with the access unit they precede), so writing
//! the frames back in order reproduces the file.

use std::io::{Read, Write};

use bytes::BytesMut;

use crate::codec::nal;
use crate::error::{MediaError, Result};
use crate::frame::{MediaFrame, Timebase};

/// Largest access unit accepted by default (8 MiB).
pub const DEFAULT_MAX_ACCESS_UNIT: usize = 8 << 20;
/// Most NAL units one access unit may hold.
pub const MAX_NALS_PER_ACCESS_UNIT: usize = 1024;
const READ_CHUNK: usize = 64 * 1024;

/// Streams access units out of an H.264 Annex B byte stream. Annex B has no timestamps: access
/// unit `n` gets `pts = n` in the frame-rate timebase given at creation.
#[derive(Debug)]
pub struct AnnexBReader<R> {
    inner: R,
    timebase: Timebase,
    buf: BytesMut,
    /// Position from which to look for the next start code.
    scan: usize,
    /// Lowest position a zero run before a start code may extend back to.
    floor: usize,
    started: bool,
    has_vcl: bool,
    keyframe: bool,
    nals: usize,
    eof: bool,
    next_pts: u64,
    max_au: usize,
}

impl<R: Read> AnnexBReader<R> {
    /// A reader whose access units last one tick of `frame_duration` each (e.g. `1/30` s).
    pub fn new(inner: R, frame_duration: Timebase) -> Self {
        AnnexBReader {
            inner,
            timebase: frame_duration,
            buf: BytesMut::new(),
            scan: 0,
            floor: 0,
            started: false,
            has_vcl: false,
            keyframe: false,
            nals: 0,
            eof: false,
            next_pts: 0,
            max_au: DEFAULT_MAX_ACCESS_UNIT,
        }
    }

    /// Sets the largest access unit accepted.
    pub fn with_max_access_unit(mut self, max: usize) -> Self {
        self.max_au = max;
        self
    }

    /// The timebase of `pts` (one tick per access unit).
    pub fn timebase(&self) -> Timebase {
        self.timebase
    }

    fn fill(&mut self) -> Result<()> {
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        loop {
            match self.inner.read(&mut self.buf[old..]) {
                Ok(n) => {
                    self.buf.truncate(old + n);
                    if n == 0 {
                        self.eof = true;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e.into());
                }
            }
        }
    }

    fn emit(&mut self, end: usize) -> MediaFrame {
        let data = self.buf.split_to(end).freeze();
        self.scan = 0;
        self.floor = 0;
        let pts = self.next_pts;
        self.next_pts += 1;
        let frame = MediaFrame {
            pts,
            timestamp: self.timebase.to_time(pts),
            duration: 1,
            keyframe: self.keyframe,
            data,
        };
        self.has_vcl = false;
        self.keyframe = false;
        self.nals = 0;
        frame
    }

    /// The next access unit, `None` at the end of the stream.
    pub fn next_frame(&mut self) -> Result<Option<MediaFrame>> {
        loop {
            let found = find_start_code(&self.buf[self.scan..]).map(|i| i + self.scan);
            let Some(p) = found else {
                if self.buf.len() > self.max_au {
                    return Err(MediaError::too_large(
                        "h264 access unit",
                        self.buf.len(),
                        self.max_au,
                    ));
                }
                if self.eof {
                    if !self.started {
                        if self.buf.is_empty() {
                            return Ok(None);
                        }
                        return Err(MediaError::BadMagic {
                            what: "h264 annex b start code",
                        });
                    }
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    if self.nals == 0 {
                        return Err(MediaError::Truncated {
                            what: "h264 nal unit",
                        });
                    }
                    let end = self.buf.len();
                    return Ok(Some(self.emit(end)));
                }
                self.scan = self.scan.max(self.buf.len().saturating_sub(2));
                self.fill()?;
                continue;
            };
            // Need the NAL header and the first slice-header byte to classify.
            if p + 5 > self.buf.len() && !self.eof {
                self.fill()?;
                continue;
            }
            let Some(&header) = self.buf.get(p + 3) else {
                return Err(MediaError::Truncated {
                    what: "h264 nal header",
                });
            };
            if header & 0x80 != 0 {
                return Err(MediaError::Invalid {
                    what: "h264 forbidden_zero_bit",
                    value: 1,
                });
            }
            let ty = header & 0x1f;
            let mut zero = p;
            while zero > self.floor && self.buf[zero - 1] == 0 {
                zero -= 1;
            }
            if !self.started {
                if zero != 0 {
                    return Err(MediaError::BadMagic {
                        what: "h264 annex b start code",
                    });
                }
                self.started = true;
            } else {
                let vcl = (nal::SLICE..=nal::IDR).contains(&ty);
                let first_slice = vcl && self.buf.get(p + 4).is_some_and(|b| b & 0x80 != 0);
                let opens = matches!(ty, nal::SEI | nal::SPS | nal::PPS | nal::AUD | 14..=18);
                if self.has_vcl && (opens || first_slice) {
                    let frame = self.emit(zero);
                    self.note_nal(ty)?;
                    self.scan = p - zero + 3;
                    self.floor = self.scan + 1;
                    return Ok(Some(frame));
                }
            }
            self.note_nal(ty)?;
            self.scan = p + 3;
            self.floor = p + 4;
        }
    }

    fn note_nal(&mut self, ty: u8) -> Result<()> {
        self.nals += 1;
        if self.nals > MAX_NALS_PER_ACCESS_UNIT {
            return Err(MediaError::too_large(
                "nal units per access unit",
                self.nals,
                MAX_NALS_PER_ACCESS_UNIT,
            ));
        }
        if (nal::SLICE..=nal::IDR).contains(&ty) {
            self.has_vcl = true;
        }
        if ty == nal::IDR {
            self.keyframe = true;
        }
        Ok(())
    }
}

impl<R: Read> Iterator for AnnexBReader<R> {
    type Item = Result<MediaFrame>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose()
    }
}

/// Index of the first `00 00 01` in `data`.
fn find_start_code(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 3 <= data.len() {
        // Skip quickly: a start code needs data[i+2] == 1 and two zeros before it.
        let b = data[i + 2];
        if b > 1 {
            i += 3;
        } else if b == 1 && data[i] == 0 && data[i + 1] == 0 {
            return Some(i);
        } else {
            i += 1;
        }
    }
    None
}

/// Writes access units (with their start codes) back to back.
#[derive(Debug)]
pub struct AnnexBWriter<W: Write> {
    inner: W,
}

impl<W: Write> AnnexBWriter<W> {
    /// A writer over `inner`.
    pub fn new(inner: W) -> Self {
        AnnexBWriter { inner }
    }

    /// Writes one access unit; it must begin with a start code.
    pub fn write_access_unit(&mut self, au: &[u8]) -> Result<()> {
        if find_start_code(au).is_none_or(|i| au[..i].iter().any(|&b| b != 0)) {
            return Err(MediaError::BadMagic {
                what: "h264 annex b start code",
            });
        }
        self.inner.write_all(au)?;
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}
