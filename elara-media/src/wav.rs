//! WAV (RIFF) reading: 16-bit linear PCM, as a source for G.711 (PCMU/PCMA) or raw PCM tracks.

use std::io::Read;

use bytes::Bytes;

use crate::error::{MediaError, Result, read_exact};
use crate::frame::{MediaFrame, Timebase};

/// Most chunks skipped before the `data` chunk.
pub const MAX_WAV_CHUNKS: usize = 64;
/// Largest non-data chunk read or skipped (1 MiB).
pub const MAX_WAV_CHUNK: usize = 1 << 20;
/// Largest PCM block one frame may hold (1 MiB); a header implying more is rejected.
pub const MAX_WAV_BLOCK: usize = 1 << 20;

/// The format of a PCM16 WAV file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct WavFormat {
    /// Channels (interleaved).
    pub channels: u16,
    /// Samples per second per channel.
    pub sample_rate: u32,
}

impl WavFormat {
    /// The timebase of frame timestamps: one tick per sample.
    pub fn timebase(&self) -> Timebase {
        Timebase {
            num: 1,
            den: self.sample_rate,
        }
    }
}

/// Streams PCM16 little-endian blocks of a fixed duration out of a WAV file.
#[derive(Debug)]
pub struct WavReader<R> {
    inner: R,
    format: WavFormat,
    remaining: u64,
    frame_samples: u32,
    next_pts: u64,
}

impl<R: Read> WavReader<R> {
    /// Reads the RIFF header and chunks up to `data`; frames will hold `frame_ms` milliseconds.
    pub fn new(mut inner: R, frame_ms: u32) -> Result<Self> {
        let mut riff = [0u8; 12];
        read_exact(&mut inner, &mut riff, "riff header")?;
        if &riff[..4] != b"RIFF" || &riff[8..] != b"WAVE" {
            return Err(MediaError::BadMagic {
                what: "riff/wave header",
            });
        }
        let mut format = None;
        for _ in 0..MAX_WAV_CHUNKS {
            let mut ch = [0u8; 8];
            read_exact(&mut inner, &mut ch, "riff chunk header")?;
            let size = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
            if &ch[..4] == b"data" {
                let format: WavFormat = format.ok_or(MediaError::Invalid {
                    what: "wav data before fmt",
                    value: 0,
                })?;
                let frame_samples =
                    u32::try_from(u64::from(format.sample_rate) * u64::from(frame_ms) / 1000)
                        .unwrap_or(u32::MAX)
                        .max(1);
                let block = u64::from(frame_samples) * u64::from(format.channels) * 2;
                if block > MAX_WAV_BLOCK as u64 {
                    return Err(MediaError::TooLarge {
                        what: "wav frame (rate x channels x duration)",
                        len: block,
                        max: MAX_WAV_BLOCK as u64,
                    });
                }
                return Ok(WavReader {
                    inner,
                    format,
                    remaining: u64::from(size),
                    frame_samples,
                    next_pts: 0,
                });
            }
            let size = size as usize;
            if size > MAX_WAV_CHUNK {
                return Err(MediaError::too_large("riff chunk", size, MAX_WAV_CHUNK));
            }
            let mut body = vec![0u8; size + (size & 1)];
            read_exact(&mut inner, &mut body, "riff chunk")?;
            if &ch[..4] == b"fmt " {
                if size < 16 {
                    return Err(MediaError::Truncated {
                        what: "wav fmt chunk",
                    });
                }
                let tag = u16::from_le_bytes([body[0], body[1]]);
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let sample_rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                let bits = u16::from_le_bytes([body[14], body[15]]);
                // 1 = PCM; 0xFFFE = WAVE_FORMAT_EXTENSIBLE (PCM subformat assumed by bit depth).
                if tag != 1 && tag != 0xfffe {
                    return Err(MediaError::Unsupported {
                        what: "wav format tag (PCM only)",
                    });
                }
                if bits != 16 {
                    return Err(MediaError::Unsupported {
                        what: "wav bit depth (16 only)",
                    });
                }
                if channels == 0 || sample_rate == 0 {
                    return Err(MediaError::Invalid {
                        what: "wav fmt",
                        value: 0,
                    });
                }
                format = Some(WavFormat {
                    channels,
                    sample_rate,
                });
            }
        }
        Err(MediaError::too_large(
            "riff chunks before data",
            MAX_WAV_CHUNKS + 1,
            MAX_WAV_CHUNKS,
        ))
    }

    /// The audio format.
    pub fn format(&self) -> WavFormat {
        self.format
    }

    /// The next block of interleaved PCM16LE samples (`pts` and `duration` in samples).
    pub fn next_frame(&mut self) -> Result<Option<MediaFrame>> {
        let block = u64::from(self.frame_samples) * u64::from(self.format.channels) * 2;
        let len = block.min(self.remaining & !1);
        if len == 0 {
            return Ok(None);
        }
        let mut data = vec![0u8; len as usize];
        let mut filled = 0;
        while filled < data.len() {
            match self.inner.read(&mut data[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        // A data chunk longer than the file (common in streamed WAVs) ends where the file does.
        let frame_bytes = usize::from(self.format.channels) * 2;
        data.truncate(filled - filled % frame_bytes);
        self.remaining = if filled < len as usize {
            0
        } else {
            self.remaining - len
        };
        if data.is_empty() {
            return Ok(None);
        }
        let samples = (data.len() / frame_bytes) as u64;
        let pts = self.next_pts;
        self.next_pts += samples;
        Ok(Some(MediaFrame {
            pts,
            timestamp: self.format.timebase().to_time(pts),
            duration: samples,
            keyframe: true,
            data: Bytes::from(data),
        }))
    }

    /// Reads every remaining sample (at most `max_samples`).
    pub fn read_all(&mut self, max_samples: usize) -> Result<Vec<i16>> {
        let mut out = Vec::new();
        while let Some(f) = self.next_frame()? {
            if out.len() + f.data.len() / 2 > max_samples {
                return Err(MediaError::too_large(
                    "wav samples",
                    out.len() + f.data.len() / 2,
                    max_samples,
                ));
            }
            out.extend(pcm16_samples(&f.data));
        }
        Ok(out)
    }
}

impl<R: Read> Iterator for WavReader<R> {
    type Item = Result<MediaFrame>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose()
    }
}

/// Interprets little-endian PCM16 bytes as samples (a trailing odd byte is ignored).
pub fn pcm16_samples(bytes: &[u8]) -> impl Iterator<Item = i16> + '_ {
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
}

/// Most PCM bytes a [`WavWriter`] holds before [`WavWriter::finish`] (64 MiB: over an hour of
/// 8 kHz mono).
pub const MAX_WAV_WRITE: usize = 64 << 20;

/// Writes a PCM16 WAV file. The RIFF header states the data length, which a plain
/// [`std::io::Write`] cannot patch afterwards, so the samples are held (up to
/// [`MAX_WAV_WRITE`] bytes) and written by [`WavWriter::finish`].
#[derive(Debug)]
pub struct WavWriter<W> {
    inner: W,
    format: WavFormat,
    data: Vec<u8>,
}

impl<W: std::io::Write> WavWriter<W> {
    /// A writer for PCM16 audio in `format`.
    pub fn new(inner: W, format: WavFormat) -> Self {
        WavWriter {
            inner,
            format,
            data: Vec::new(),
        }
    }

    /// Appends interleaved PCM16 little-endian bytes.
    pub fn write_pcm(&mut self, pcm: &[u8]) -> Result<()> {
        if self.data.len() + pcm.len() > MAX_WAV_WRITE {
            return Err(MediaError::too_large(
                "wav data",
                self.data.len() + pcm.len(),
                MAX_WAV_WRITE,
            ));
        }
        self.data.extend_from_slice(pcm);
        Ok(())
    }

    /// Appends samples.
    pub fn write_samples(&mut self, samples: &[i16]) -> Result<()> {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.write_pcm(&bytes)
    }

    /// Writes the header and the samples; returns the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        let len = self.data.len() as u32;
        let channels = self.format.channels;
        let rate = self.format.sample_rate;
        let block = channels * 2;
        let mut h = Vec::with_capacity(44);
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&(36 + len + (len & 1)).to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        h.extend_from_slice(&block.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&len.to_le_bytes());
        self.inner.write_all(&h)?;
        self.inner.write_all(&self.data)?;
        if len & 1 == 1 {
            self.inner.write_all(&[0])?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}
