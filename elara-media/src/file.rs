//! One entry point for every sample file: [`MediaReader::open`] detects the container from its
//! first bytes and yields [`MediaFrame`]s (timestamp, keyframe flag, bytes); [`MediaWriter`]
//! writes frames back into the container a [`TrackHeader`] describes.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::annexb::{AnnexBReader, AnnexBWriter};
use crate::codec::{Codec, opus_packet_samples};
use crate::error::{MediaError, Result};
use crate::frame::{MediaFrame, Timebase};
use crate::ivf::{IvfReader, IvfWriter};
use crate::opus::{OPUS_TIMEBASE, OpusReader, OpusWriter};
use crate::track::{ContainerConfig, TrackHeader};
use crate::wav::WavReader;

/// Choices for containers that leave timing open.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadOptions {
    /// Duration of one H.264 access unit (Annex B carries no timestamps). Default `1/30` s.
    pub h264_frame_duration: Timebase,
    /// Length of the PCM blocks read from WAV files, in milliseconds. Default 20.
    pub wav_frame_ms: u32,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            h264_frame_duration: Timebase { num: 1, den: 30 },
            wav_frame_ms: 20,
        }
    }
}

/// Replays a few already-read bytes before the rest of a reader.
#[derive(Debug)]
struct Prefixed<R> {
    prefix: [u8; 12],
    len: usize,
    pos: usize,
    inner: R,
}

impl<R: Read> Read for Prefixed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < self.len {
            let n = (self.len - self.pos).min(buf.len());
            buf[..n].copy_from_slice(&self.prefix[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

#[derive(Debug)]
enum Source<R> {
    Opus(OpusReader<R>),
    Ivf(IvfReader<R>),
    AnnexB(AnnexBReader<R>),
    Wav(WavReader<R>),
}

/// Reads any supported file — Ogg Opus, IVF (VP8/VP9/AV1), H.264 Annex B, PCM16 WAV — as an
/// iterator of [`MediaFrame`]s.
///
/// ```
/// let mut reader = elara_media::MediaReader::open(concat!(
///     env!("CARGO_MANIFEST_DIR"),
///     "/samples/testsrc-vp8.ivf"
/// ))?;
/// assert_eq!(reader.header().codec, elara_media::Codec::Vp8);
/// let first = reader.next().unwrap()?;
/// assert!(first.keyframe);
/// # Ok::<(), elara_media::MediaError>(())
/// ```
#[derive(Debug)]
pub struct MediaReader<R> {
    header: TrackHeader,
    source: Source<Prefixed<R>>,
}

impl MediaReader<BufReader<File>> {
    /// Opens a file with the default [`ReadOptions`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        MediaReader::with_options(BufReader::new(File::open(path)?), ReadOptions::default())
    }
}

impl<R: Read> MediaReader<R> {
    /// Detects the container of `inner` with the default [`ReadOptions`].
    pub fn new(inner: R) -> Result<Self> {
        MediaReader::with_options(inner, ReadOptions::default())
    }

    /// Detects the container of `inner` from its first bytes and reads its header.
    pub fn with_options(mut inner: R, options: ReadOptions) -> Result<Self> {
        let mut prefix = [0u8; 12];
        let mut len = 0;
        while len < prefix.len() {
            match inner.read(&mut prefix[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let p = &prefix[..len];
        let stream = Prefixed {
            prefix,
            len,
            pos: 0,
            inner,
        };
        if p.starts_with(b"OggS") {
            let r = OpusReader::new(stream)?;
            let header = TrackHeader {
                codec: Codec::Opus,
                timebase: OPUS_TIMEBASE,
                container: ContainerConfig::OggOpus {
                    serial: r.serial(),
                    head: r.head().raw.clone(),
                    tags: r.tags().clone(),
                },
            };
            Ok(MediaReader {
                header,
                source: Source::Opus(r),
            })
        } else if p.starts_with(b"DKIF") {
            let r = IvfReader::new(stream)?;
            let header = TrackHeader {
                codec: r.codec(),
                timebase: r.timebase(),
                container: ContainerConfig::Ivf(r.header().clone()),
            };
            Ok(MediaReader {
                header,
                source: Source::Ivf(r),
            })
        } else if p.starts_with(b"RIFF") {
            let r = WavReader::new(stream, options.wav_frame_ms)?;
            let format = r.format();
            let header = TrackHeader {
                codec: Codec::Pcm16,
                timebase: format.timebase(),
                container: ContainerConfig::Wav(format),
            };
            Ok(MediaReader {
                header,
                source: Source::Wav(r),
            })
        } else if p.starts_with(&[0, 0, 1]) || p.starts_with(&[0, 0, 0, 1]) {
            let tb = options.h264_frame_duration;
            Timebase::new(tb.num, tb.den)?;
            let header = TrackHeader {
                codec: Codec::H264,
                timebase: tb,
                container: ContainerConfig::AnnexB,
            };
            Ok(MediaReader {
                header,
                source: Source::AnnexB(AnnexBReader::new(stream, tb)),
            })
        } else {
            Err(MediaError::UnknownFormat)
        }
    }

    /// Codec, timebase and container header of the track.
    pub fn header(&self) -> &TrackHeader {
        &self.header
    }

    /// The next frame, `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<MediaFrame>> {
        match &mut self.source {
            Source::Opus(r) => r.next_frame(),
            Source::Ivf(r) => r.next_frame(),
            Source::AnnexB(r) => r.next_frame(),
            Source::Wav(r) => r.next_frame(),
        }
    }
}

impl<R: Read> Iterator for MediaReader<R> {
    type Item = Result<MediaFrame>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose()
    }
}

#[derive(Debug)]
enum Sink<W: Write> {
    Opus(OpusWriter<W>),
    Ivf(IvfWriter<W>),
    AnnexB(AnnexBWriter<W>),
}

/// Writes frames into the container described by a [`TrackHeader`] (Ogg Opus, IVF, Annex B).
#[derive(Debug)]
pub struct MediaWriter<W: Write> {
    sink: Sink<W>,
}

impl MediaWriter<BufWriter<File>> {
    /// Creates (or truncates) a file at `path`.
    pub fn create(path: impl AsRef<Path>, header: &TrackHeader) -> Result<Self> {
        MediaWriter::new(BufWriter::new(File::create(path)?), header)
    }
}

impl<W: Write> MediaWriter<W> {
    /// Writes the container header to `inner`.
    pub fn new(inner: W, header: &TrackHeader) -> Result<Self> {
        let sink = match &header.container {
            ContainerConfig::OggOpus { serial, head, tags } => {
                Sink::Opus(OpusWriter::new(inner, *serial, head, tags)?)
            }
            ContainerConfig::Ivf(h) => Sink::Ivf(IvfWriter::new(inner, h)?),
            ContainerConfig::AnnexB => Sink::AnnexB(AnnexBWriter::new(inner)),
            ContainerConfig::Wav(_) => {
                return Err(MediaError::Unsupported {
                    what: "writing wav files",
                });
            }
        };
        Ok(MediaWriter { sink })
    }

    /// Writes one frame. For Opus, the packet ends at `pts + duration` (the duration is taken
    /// from the packet's TOC when the frame's is 0).
    pub fn write_frame(&mut self, frame: &MediaFrame) -> Result<()> {
        match &mut self.sink {
            Sink::Opus(w) => {
                let duration = if frame.duration == 0 {
                    u64::from(opus_packet_samples(&frame.data)?)
                } else {
                    frame.duration
                };
                w.write_packet(&frame.data, frame.pts.saturating_add(duration))
            }
            Sink::Ivf(w) => w.write_frame(frame.pts, &frame.data),
            Sink::AnnexB(w) => w.write_access_unit(&frame.data),
        }
    }

    /// Finishes the file; `end_pts`, when known, is where the last frame ends (Ogg Opus uses it
    /// as the final granule position, so end trimming survives).
    pub fn finish(self, end_pts: Option<u64>) -> Result<W> {
        match self.sink {
            Sink::Opus(w) => w.finish(end_pts),
            Sink::Ivf(w) => w.finish(),
            Sink::AnnexB(w) => w.finish(),
        }
    }
}
