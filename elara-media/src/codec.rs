//! Codecs, and what can be learned from their bitstreams: keyframes and durations.
//!
//! Keyframe flags come from the coded data itself, never from container hints alone: the VP8
//! frame tag, the VP9 uncompressed header, the AV1 sequence and frame headers, and the H.264 NAL
//! unit types. Opus packets always decode on their own; their duration comes from the TOC byte.

use elara_core::UpdateKind;

use crate::error::{MediaError, Result};

/// A media codec ELARA can carry.
///
/// The numbering ([`Codec::as_u8`]) is the one used in `elara_core::TrackInfo::codec`, and
/// [`Codec::bit`] the one used in `elara_core::Capabilities::codecs`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u8)]
#[non_exhaustive]
pub enum Codec {
    /// Opus audio (RFC 6716), 48 kHz timeline.
    Opus = 1,
    /// G.711 μ-law audio, 8 kHz.
    Pcmu = 2,
    /// G.711 A-law audio, 8 kHz.
    Pcma = 3,
    /// Raw PCM, signed 16-bit little-endian (as read from WAV files).
    Pcm16 = 4,
    /// H.264 / AVC video (Annex B byte stream).
    H264 = 16,
    /// VP8 video.
    Vp8 = 17,
    /// VP9 video.
    Vp9 = 18,
    /// AV1 video.
    Av1 = 19,
}

impl Codec {
    /// Every codec, audio first.
    pub const ALL: [Codec; 8] = [
        Codec::Opus,
        Codec::Pcmu,
        Codec::Pcma,
        Codec::Pcm16,
        Codec::H264,
        Codec::Vp8,
        Codec::Vp9,
        Codec::Av1,
    ];

    /// The wire number.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// From the wire number; `None` for an unknown number.
    pub fn from_u8(v: u8) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.as_u8() == v)
    }

    /// This codec's bit in a capability bit set (`elara_core::Capabilities::codecs`).
    pub const fn bit(self) -> u32 {
        1 << (self as u8 & 31)
    }

    /// The codecs in a capability bit set, in [`Codec::ALL`] order (unknown bits ignored).
    pub fn from_bits(bits: u32) -> Vec<Codec> {
        Codec::ALL
            .into_iter()
            .filter(|c| bits & c.bit() != 0)
            .collect()
    }

    /// Audio or video.
    pub const fn kind(self) -> UpdateKind {
        match self {
            Codec::Opus | Codec::Pcmu | Codec::Pcma | Codec::Pcm16 => UpdateKind::Audio,
            Codec::H264 | Codec::Vp8 | Codec::Vp9 | Codec::Av1 => UpdateKind::Video,
        }
    }

    /// True for audio codecs.
    pub const fn is_audio(self) -> bool {
        matches!(self.kind(), UpdateKind::Audio)
    }

    /// Short lowercase name (`opus`, `pcmu`, `h264`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
            Codec::Pcm16 => "pcm16",
            Codec::H264 => "h264",
            Codec::Vp8 => "vp8",
            Codec::Vp9 => "vp9",
            Codec::Av1 => "av1",
        }
    }

    /// True when `frame` decodes without earlier frames, judged from the bitstream.
    ///
    /// Audio frames always do. For video see [`vp8_is_keyframe`], [`vp9_is_keyframe`],
    /// [`av1_is_keyframe`] and [`h264_is_keyframe`].
    pub fn is_keyframe(self, frame: &[u8]) -> Result<bool> {
        match self {
            Codec::Opus | Codec::Pcmu | Codec::Pcma | Codec::Pcm16 => Ok(true),
            Codec::H264 => h264_is_keyframe(frame),
            Codec::Vp8 => vp8_is_keyframe(frame),
            Codec::Vp9 => vp9_is_keyframe(frame),
            Codec::Av1 => av1_is_keyframe(frame),
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads bits most-significant first.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self, what: &'static str) -> Result<u32> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or(MediaError::Truncated { what })?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(u32::from(b))
    }

    fn bits(&mut self, n: u32, what: &'static str) -> Result<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit(what)?;
        }
        Ok(v)
    }
}

/// VP8 (RFC 6386 §9.1): bit 0 of the frame tag is 0 for a key frame, which must also carry the
/// start code `9d 01 2a` after the 3-byte tag.
pub fn vp8_is_keyframe(frame: &[u8]) -> Result<bool> {
    let tag = frame.first().ok_or(MediaError::Truncated {
        what: "vp8 frame tag",
    })?;
    if tag & 1 != 0 {
        return Ok(false);
    }
    if frame.len() < 10 {
        return Err(MediaError::Truncated {
            what: "vp8 key frame header",
        });
    }
    if frame[3..6] != [0x9d, 0x01, 0x2a] {
        return Err(MediaError::BadMagic {
            what: "vp8 key frame start code",
        });
    }
    Ok(true)
}

/// VP9 (uncompressed header, VP9 bitstream spec §6.2): `frame_marker`, profile,
/// `show_existing_frame`, then `frame_type` 0 for a key frame, which must carry the sync code
/// `49 83 42`. A superframe is judged by its first frame, which the index places at offset 0.
pub fn vp9_is_keyframe(frame: &[u8]) -> Result<bool> {
    const WHAT: &str = "vp9 uncompressed header";
    let mut r = BitReader::new(frame);
    let marker = r.bits(2, WHAT)?;
    if marker != 2 {
        return Err(MediaError::Invalid {
            what: "vp9 frame marker",
            value: u64::from(marker),
        });
    }
    let low = r.bit(WHAT)?;
    let high = r.bit(WHAT)?;
    if (high << 1 | low) == 3 && r.bit(WHAT)? != 0 {
        return Err(MediaError::Invalid {
            what: "vp9 reserved bit",
            value: 1,
        });
    }
    if r.bit(WHAT)? == 1 {
        // show_existing_frame: repeats an earlier frame, decodes nothing new.
        return Ok(false);
    }
    let frame_type = r.bit(WHAT)?;
    if frame_type != 0 {
        return Ok(false);
    }
    let _show_frame = r.bit(WHAT)?;
    let _error_resilient = r.bit(WHAT)?;
    let sync = r.bits(24, WHAT)?;
    if sync != 0x49_83_42 {
        return Err(MediaError::BadMagic {
            what: "vp9 key frame sync code",
        });
    }
    Ok(true)
}

/// Reads an AV1 `leb128()` value (at most 8 bytes, at most `u32::MAX`). Returns value and length.
pub(crate) fn leb128(data: &[u8]) -> Result<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..8 {
        let b = *data
            .get(i)
            .ok_or(MediaError::Truncated { what: "av1 leb128" })?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if value > u64::from(u32::MAX) {
                return Err(MediaError::Invalid {
                    what: "av1 leb128",
                    value,
                });
            }
            return Ok((value, i + 1));
        }
    }
    Err(MediaError::Invalid {
        what: "av1 leb128 length",
        value: 9,
    })
}

/// Most OBUs one temporal unit may hold before it is rejected.
pub const MAX_AV1_OBUS: usize = 4096;

/// AV1 (AV1 spec §5.3, §5.5, §5.9): a temporal unit is a key frame when it carries a sequence
/// header OBU and a frame header (`OBU_FRAME_HEADER` or `OBU_FRAME`) whose `frame_type` is
/// `KEY_FRAME` (always so with `reduced_still_picture_header`). OBUs must carry size fields, as
/// they do in IVF and the low-overhead bitstream format.
pub fn av1_is_keyframe(tu: &[u8]) -> Result<bool> {
    const WHAT: &str = "av1 obu header";
    let mut rest = tu;
    let mut seq_header = false;
    let mut reduced_still = false;
    let mut key_frame = false;
    let mut obus = 0;
    if rest.is_empty() {
        return Err(MediaError::Truncated {
            what: "av1 temporal unit",
        });
    }
    while !rest.is_empty() {
        obus += 1;
        if obus > MAX_AV1_OBUS {
            return Err(MediaError::too_large(
                "av1 obus per temporal unit",
                obus,
                MAX_AV1_OBUS,
            ));
        }
        let h = rest[0];
        if h & 0x80 != 0 {
            return Err(MediaError::Invalid {
                what: "av1 obu forbidden bit",
                value: 1,
            });
        }
        let obu_type = (h >> 3) & 0x0f;
        let has_ext = h & 0x04 != 0;
        if h & 0x02 == 0 {
            return Err(MediaError::Unsupported {
                what: "av1 obu without size field",
            });
        }
        let mut off = 1 + usize::from(has_ext);
        if rest.len() < off {
            return Err(MediaError::Truncated { what: WHAT });
        }
        let (size, n) = leb128(&rest[off..])?;
        off += n;
        let size = usize::try_from(size).map_err(|_| MediaError::Truncated { what: "av1 obu" })?;
        let end = off
            .checked_add(size)
            .ok_or(MediaError::Truncated { what: "av1 obu" })?;
        let payload = rest
            .get(off..end)
            .ok_or(MediaError::Truncated { what: "av1 obu" })?;
        match obu_type {
            1 => {
                // sequence header: seq_profile(3) still_picture(1) reduced_still_picture_header(1)
                let mut r = BitReader::new(payload);
                let _profile = r.bits(3, "av1 sequence header")?;
                let _still = r.bit("av1 sequence header")?;
                reduced_still = r.bit("av1 sequence header")? == 1;
                seq_header = true;
            }
            3 | 6 => {
                if reduced_still {
                    key_frame = true;
                } else {
                    let mut r = BitReader::new(payload);
                    let show_existing = r.bit("av1 frame header")?;
                    if show_existing == 0 && r.bits(2, "av1 frame header")? == 0 {
                        key_frame = true;
                    }
                }
            }
            _ => {}
        }
        rest = &rest[end..];
    }
    Ok(seq_header && key_frame)
}

/// H.264 NAL unit types this crate looks at (ITU-T H.264 Table 7-1).
pub mod nal {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
    /// Coded slice of an IDR picture: a key frame.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
}

/// Splits an Annex B byte string into NAL units (without start codes and without the trailing
/// zero bytes that precede the next start code).
pub fn h264_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        while e > s && data[e - 1] == 0 {
            e -= 1;
        }
        out.push(&data[s..e]);
    }
    out.into_iter()
}

/// What an H.264 access unit holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct H264AccessUnit {
    /// NAL units in it.
    pub nal_units: usize,
    /// Coded slices (types 1–5).
    pub slices: usize,
    /// True when a slice is of an IDR picture (type 5): a key frame.
    pub idr: bool,
    /// A sequence parameter set is present (type 7).
    pub sps: bool,
    /// A picture parameter set is present (type 8).
    pub pps: bool,
}

impl H264AccessUnit {
    /// True when a decoder can start here: an IDR picture with its parameter sets in-band.
    pub fn is_random_access_point(&self) -> bool {
        self.idr && self.sps && self.pps
    }
}

/// The header byte of one H.264 NAL unit, checked: present, with forbidden_zero_bit clear.
fn h264_nal_header(unit: &[u8]) -> Result<u8> {
    let h = *unit.first().ok_or(MediaError::Truncated {
        what: "h264 nal header",
    })?;
    if h & 0x80 != 0 {
        return Err(MediaError::Invalid {
            what: "h264 forbidden_zero_bit",
            value: 1,
        });
    }
    Ok(h)
}

/// Lists the NAL unit types of an Annex B access unit.
pub fn h264_access_unit(au: &[u8]) -> Result<H264AccessUnit> {
    let mut info = H264AccessUnit::default();
    for unit in h264_nal_units(au) {
        let h = h264_nal_header(unit)?;
        info.nal_units += 1;
        match h & 0x1f {
            nal::SLICE..=nal::IDR => {
                info.slices += 1;
                info.idr |= h & 0x1f == nal::IDR;
            }
            nal::SPS => info.sps = true,
            nal::PPS => info.pps = true,
            _ => {}
        }
    }
    if info.nal_units == 0 {
        return Err(MediaError::Truncated {
            what: "h264 access unit",
        });
    }
    Ok(info)
}

/// H.264: an access unit is a key frame when it holds a coded slice of an IDR picture (NAL unit
/// type 5).
pub fn h264_is_keyframe(au: &[u8]) -> Result<bool> {
    let mut any = false;
    for unit in h264_nal_units(au) {
        let h = h264_nal_header(unit)?;
        any = true;
        if h & 0x1f == nal::IDR {
            return Ok(true);
        }
    }
    if any {
        Ok(false)
    } else {
        Err(MediaError::Truncated {
            what: "h264 access unit",
        })
    }
}

/// Samples (at 48 kHz) of one Opus frame for a TOC configuration number (RFC 6716 §3.1).
const fn opus_frame_samples(config: u8) -> u32 {
    match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    }
}

/// Duration of an Opus packet in 48 kHz samples, from its TOC byte and (code 3) frame count
/// (RFC 6716 §3.1–3.2). Packets longer than 120 ms are invalid.
pub fn opus_packet_samples(packet: &[u8]) -> Result<u32> {
    let toc = *packet
        .first()
        .ok_or(MediaError::Truncated { what: "opus toc" })?;
    let per_frame = opus_frame_samples(toc >> 3);
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => {
            let c = *packet.get(1).ok_or(MediaError::Truncated {
                what: "opus frame count",
            })?;
            u32::from(c & 0x3f)
        }
    };
    let total = per_frame * frames;
    if frames == 0 || total > 5760 {
        return Err(MediaError::Invalid {
            what: "opus packet duration",
            value: u64::from(total),
        });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_numbers_round_trip_and_bits_are_distinct() {
        let mut bits = 0;
        for c in Codec::ALL {
            assert_eq!(Codec::from_u8(c.as_u8()), Some(c));
            assert_eq!(bits & c.bit(), 0);
            bits |= c.bit();
        }
        assert_eq!(Codec::from_u8(0), None);
        assert_eq!(Codec::from_bits(bits), Codec::ALL.to_vec());
        assert_eq!(
            Codec::from_bits(Codec::Pcma.bit() | Codec::Av1.bit() | 1),
            [Codec::Pcma, Codec::Av1]
        );
        assert!(Codec::Opus.is_audio() && !Codec::Av1.is_audio());
    }

    #[test]
    fn vp8_tags() {
        assert!(vp8_is_keyframe(&[0x10, 0, 0, 0x9d, 0x01, 0x2a, 0, 0, 0, 0]).unwrap());
        assert!(!vp8_is_keyframe(&[0x11, 0, 0]).unwrap());
        assert!(matches!(
            vp8_is_keyframe(&[]),
            Err(MediaError::Truncated { .. })
        ));
        assert!(matches!(
            vp8_is_keyframe(&[0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(MediaError::BadMagic { .. })
        ));
    }

    #[test]
    fn vp9_headers() {
        // marker 10, profile 0 (0,0), show_existing 0, frame_type 0, show 1, er 0, sync code
        let mut bits: Vec<u8> = vec![1, 0, 0, 0, 0, 0, 1, 0];
        for b in [0x49u8, 0x83, 0x42] {
            for i in (0..8).rev() {
                bits.push((b >> i) & 1);
            }
        }
        let mut bytes = vec![0u8; bits.len().div_ceil(8)];
        for (i, b) in bits.iter().enumerate() {
            bytes[i / 8] |= b << (7 - i % 8);
        }
        assert!(vp9_is_keyframe(&bytes).unwrap());
        // inter frame: frame_type 1
        assert!(!vp9_is_keyframe(&[0b1000_0100]).unwrap());
        // show existing frame
        assert!(!vp9_is_keyframe(&[0b1000_1000]).unwrap());
        assert!(matches!(
            vp9_is_keyframe(&[0]),
            Err(MediaError::Invalid { .. })
        ));
    }

    #[test]
    fn av1_obus() {
        // temporal delimiter, sequence header (profile 0, not still), frame header KEY_FRAME
        let tu = [0x12, 0x00, 0x0a, 0x01, 0x00, 0x32, 0x01, 0x00];
        assert!(av1_is_keyframe(&tu).unwrap());
        // frame header with frame_type INTER (01) and no sequence header
        let inter = [0x12, 0x00, 0x32, 0x01, 0b0010_0000];
        assert!(!av1_is_keyframe(&inter).unwrap());
        assert!(matches!(
            av1_is_keyframe(&[0x12, 0x05]),
            Err(MediaError::Truncated { .. })
        ));
    }

    #[test]
    fn h264_idr_detection() {
        let idr = [0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 0x88];
        assert!(h264_is_keyframe(&idr).unwrap());
        let p = [0, 0, 0, 1, 0x41, 0x9a];
        assert!(!h264_is_keyframe(&p).unwrap());
        assert_eq!(h264_nal_units(&idr).count(), 3);
    }

    #[test]
    fn opus_durations() {
        // config 1 (SILK NB 20 ms), code 0
        assert_eq!(opus_packet_samples(&[1 << 3]).unwrap(), 960);
        // config 31 (CELT FB 20 ms), code 1: two frames
        assert_eq!(opus_packet_samples(&[31 << 3 | 1]).unwrap(), 1920);
        // config 3 (SILK 60 ms), code 3 with 3 frames = 180 ms: invalid
        assert!(opus_packet_samples(&[3 << 3 | 3, 3]).is_err());
        assert!(opus_packet_samples(&[]).is_err());
    }
}
