//! G.711 (ITU-T G.711) μ-law (PCMU) and A-law (PCMA): 16-bit linear PCM ↔ 8-bit companded
//! samples, so PCM sources can be sent to telephony peers.
//!
//! Encoding follows the segment/quantisation rules of the recommendation (14-bit μ-law input
//! with bias 33, 13-bit A-law input with even-bit inversion 0x55); decoding is by table.

const fn build_ulaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        let u = !(i as u8);
        let exponent = ((u >> 4) & 7) as i32;
        let mantissa = (u & 0x0f) as i32;
        let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
        t[i] = if u & 0x80 != 0 {
            -magnitude as i16
        } else {
            magnitude as i16
        };
        i += 1;
    }
    t
}

const fn build_alaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        let a = (i as u8) ^ 0x55;
        let exponent = ((a >> 4) & 7) as i32;
        let mantissa = (a & 0x0f) as i32;
        let magnitude = if exponent == 0 {
            (mantissa << 4) + 8
        } else {
            ((mantissa << 4) + 0x108) << (exponent - 1)
        };
        t[i] = if a & 0x80 != 0 {
            magnitude as i16
        } else {
            -magnitude as i16
        };
        i += 1;
    }
    t
}

static ULAW_DECODE: [i16; 256] = build_ulaw_decode();
static ALAW_DECODE: [i16; 256] = build_alaw_decode();

/// μ-law code of one sample, by the recommendation's segment rule (14-bit magnitude, bias 33).
const fn ulaw_code(sample: i16) -> u8 {
    const BIAS: u32 = 0x84;
    const CLIP: u32 = 32635;
    let sign = if sample < 0 { 0x80 } else { 0 };
    let mut magnitude = sample.unsigned_abs() as u32;
    if magnitude > CLIP {
        magnitude = CLIP;
    }
    magnitude += BIAS;
    // Segment = position of the highest set bit above bit 7 (0..=7).
    let exponent = (31 - (magnitude | 0x80).leading_zeros()) - 7;
    let mantissa = (magnitude >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// A-law code of one sample (13-bit magnitude, even bits inverted with 0x55).
const fn alaw_code(sample: i16) -> u8 {
    let s = (sample as i32) >> 3;
    let (sign, mut magnitude) = if s >= 0 { (0x80, s) } else { (0x00, -s - 1) };
    if magnitude > 0x0fff {
        magnitude = 0x0fff;
    }
    let code = if magnitude < 32 {
        magnitude >> 1
    } else {
        let exponent = (31 - (magnitude as u32).leading_zeros()) as i32 - 4; // 1..=7
        (exponent << 4) | ((magnitude >> exponent) & 0x0f)
    };
    ((sign | code) as u8) ^ 0x55
}

const fn build_encode(alaw: bool) -> [u8; 65536] {
    let mut t = [0u8; 65536];
    let mut i = 0;
    while i < 65536 {
        let sample = i as u16 as i16;
        t[i] = if alaw {
            alaw_code(sample)
        } else {
            ulaw_code(sample)
        };
        i += 1;
    }
    t
}

/// Encoding tables, indexed by the sample's bits: one load per sample (64 KiB each, built at
/// compile time from the segment rules above).
static ULAW_ENCODE: [u8; 65536] = build_encode(false);
static ALAW_ENCODE: [u8; 65536] = build_encode(true);

/// Encodes one 16-bit linear sample as μ-law.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    ULAW_ENCODE[usize::from(sample as u16)]
}

/// Encodes one 16-bit linear sample as A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    ALAW_ENCODE[usize::from(sample as u16)]
}

/// Decodes one μ-law byte.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// Decodes one A-law byte.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

/// Encodes PCM16 samples as μ-law into `out` (cleared first).
pub fn encode_ulaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.clear();
    out.extend(pcm.iter().map(|&s| linear_to_ulaw(s)));
}

/// Encodes PCM16 samples as A-law into `out` (cleared first).
pub fn encode_alaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.clear();
    out.extend(pcm.iter().map(|&s| linear_to_alaw(s)));
}

/// Decodes μ-law bytes to PCM16 into `out` (cleared first).
pub fn decode_ulaw(codes: &[u8], out: &mut Vec<i16>) {
    out.clear();
    out.extend(codes.iter().map(|&c| ulaw_to_linear(c)));
}

/// Decodes A-law bytes to PCM16 into `out` (cleared first).
pub fn decode_alaw(codes: &[u8], out: &mut Vec<i16>) {
    out.clear();
    out.extend(codes.iter().map(|&c| alaw_to_linear(c)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_points() {
        // Values from the G.711 tables: silence, full scale, and known codes.
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(-1), 0x7f);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(-8), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xaa);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2a);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
    }

    #[test]
    fn tables_match_the_segment_rules() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(linear_to_ulaw(s), ulaw_code(s));
            assert_eq!(linear_to_alaw(s), alaw_code(s));
        }
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for c in 0..=255u8 {
            // μ-law has two zeros (0x7f and 0xff); both decode to 0, which encodes as 0xff.
            let back = linear_to_ulaw(ulaw_to_linear(c));
            assert!(
                back == c || (c == 0x7f && back == 0xff),
                "ulaw {c:#x} -> {back:#x}"
            );
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw {c:#x}");
        }
    }

    proptest! {
        #[test]
        fn companding_error_is_bounded(s in any::<i16>()) {
            // Quantisation step grows with the segment: error below 1/16 of |s| plus a floor.
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(s)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(s)));
            let bound = (i32::from(s).abs() / 16).max(16) + 140;
            prop_assert!((u - i32::from(s)).abs() <= bound, "ulaw {} -> {}", s, u);
            prop_assert!((a - i32::from(s)).abs() <= bound, "alaw {} -> {}", s, a);
            // Monotone: the sign is kept.
            prop_assert!(u == 0 || (u > 0) == (s > 0) || i32::from(s).abs() < 16);
        }
    }
}
