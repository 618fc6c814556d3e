//! Truncated, corrupted and arbitrary inputs give typed errors, never panics.

use std::path::Path;

use bytes::Bytes;
use elara_core::{Fragment, GroupId, NodeId, Priority, StateId, StateUpdate, Time, UpdateKind};
use elara_media::{Codec, Depacketizer, MediaError, MediaReader, TrackHeader};
use proptest::prelude::*;

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("samples")
            .join(name),
    )
    .unwrap()
}

/// Reads every frame; returns the frame count or the first error. Panics propagate.
fn read_all(bytes: &[u8]) -> Result<usize, MediaError> {
    let mut reader = MediaReader::new(bytes)?;
    let mut n = 0;
    while reader.next_frame()?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// The first `len` bytes of each sample (whole speech files; the start of each video).
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("speech.opus", usize::MAX),
        ("speech-8k.wav", usize::MAX),
        ("testsrc.h264", 40_000),
        ("testsrc-vp8.ivf", 40_000),
        ("testsrc-vp9.ivf", 20_000),
        ("testsrc-av1.ivf", 20_000),
    ]
    .into_iter()
    .map(|(n, len)| {
        let mut b = sample(n);
        b.truncate(len);
        (n, b)
    })
    .collect()
}

#[test]
fn unknown_and_empty_inputs() {
    assert!(matches!(read_all(b""), Err(MediaError::UnknownFormat)));
    assert!(matches!(
        read_all(b"hello world, not media"),
        Err(MediaError::UnknownFormat)
    ));
    assert!(matches!(
        read_all(b"OggS"),
        Err(MediaError::Truncated { .. })
    ));
    assert!(matches!(
        read_all(b"DKIF\0\0 \0"),
        Err(MediaError::Truncated { .. })
    ));
}

#[test]
fn ivf_cut_inside_a_frame_is_truncated() {
    let vp8 = sample("testsrc-vp8.ivf");
    // Header 32 bytes, first frame header 12 bytes, then the frame.
    assert!(matches!(
        read_all(&vp8[..32 + 12 + 10]),
        Err(MediaError::Truncated { .. })
    ));
    assert!(matches!(
        read_all(&vp8[..32 + 6]),
        Err(MediaError::Truncated { .. })
    ));
    assert_eq!(read_all(&vp8[..32]).unwrap(), 0);
}

#[test]
fn oversized_ivf_frame_is_rejected_before_allocating() {
    let mut vp8 = sample("testsrc-vp8.ivf");
    vp8[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(read_all(&vp8), Err(MediaError::TooLarge { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn truncated_files_never_panic(which in 0..6usize, cut in 0.0..1.0f64) {
        let (name, bytes) = &corpus()[which];
        let at = (bytes.len() as f64 * cut) as usize;
        let result = read_all(&bytes[..at]);
        // Ogg pages and IVF frames carry their lengths: a cut inside one is `Truncated`.
        if (name.ends_with(".opus") || name.ends_with(".ivf"))
            && let Err(e) = &result
        {
            prop_assert!(
                matches!(e, MediaError::Truncated { .. } | MediaError::UnknownFormat),
                "{name}: {e}"
            );
        }
    }

    #[test]
    fn corrupted_files_never_panic(
        which in 0..6usize,
        edits in prop::collection::vec((0.0..1.0f64, any::<u8>()), 1..8),
    ) {
        let (_, bytes) = &corpus()[which];
        let mut b = bytes.clone();
        for (pos, v) in edits {
            let i = ((b.len() as f64 * pos) as usize).min(b.len() - 1);
            b[i] = v;
        }
        let _ = read_all(&b);
    }

    #[test]
    fn any_changed_byte_of_an_ogg_file_is_detected(pos in 0.0..1.0f64, flip in 1..=255u8) {
        let mut b = sample("speech.opus");
        let i = ((b.len() as f64 * pos) as usize).min(b.len() - 1);
        b[i] ^= flip;
        prop_assert!(read_all(&b).is_err(), "byte {} changed unnoticed", i);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), tag in 0..5usize) {
        let mut b = bytes;
        let magic: &[u8] = [&b"OggS"[..], b"DKIF", b"RIFF", &[0, 0, 0, 1], b""][tag];
        b.splice(0..0, magic.iter().copied());
        let _ = read_all(&b);
        let _ = TrackHeader::decode(&b);
        for c in Codec::ALL {
            let _ = c.is_keyframe(&b);
        }
        let _ = elara_media::codec::opus_packet_samples(&b);
    }

    #[test]
    fn arbitrary_updates_never_panic(
        ups in prop::collection::vec(
            (0..64u64, 0..4u16, 0..4u16, 0..4u8, any::<bool>(), prop::collection::vec(any::<u8>(), 0..64), 0..500u64),
            0..96,
        )
    ) {
        let mut d = Depacketizer::new(StateId(1));
        let mut frames = 0;
        for (seq, index, count, kind, key, payload, at) in ups {
            let u = StateUpdate {
                state: StateId(1),
                source: NodeId::from_u64(1),
                seq,
                group: GroupId(seq / 8),
                timestamp: Time::from_millis(seq * 10),
                keyframe: key,
                layer: 0,
                priority: Priority::Normal,
                kind: UpdateKind::from_u8(kind).unwrap(),
                fragment: Fragment { index, count },
                payload: Bytes::from(payload),
            };
            d.push(u, Time::from_millis(at));
            while d.poll(Time::from_millis(at)).is_some() {
                frames += 1;
            }
        }
        while d.poll(Time::MAX).is_some() {
            frames += 1;
        }
        let s = d.stats();
        prop_assert!(frames <= s.packets_received);
        prop_assert_eq!(s.packets_lost, s.packets_expected - s.packets_received);
    }
}

#[test]
fn extreme_sequence_numbers_do_not_overflow() {
    let mut d = Depacketizer::new(StateId(1));
    for (i, seq) in [0, u64::MAX, u64::MAX - 1, u64::MAX, 1]
        .into_iter()
        .enumerate()
    {
        let u = StateUpdate::new(StateId(1), NodeId::from_u64(1), seq, Time::MAX)
            .with_kind(UpdateKind::Audio)
            .with_payload(Bytes::from_static(b"x"));
        d.push(u, Time::from_millis(i as u64));
        while d.poll(Time::MAX).is_some() {}
    }
    let s = d.stats();
    assert_eq!(s.packets_expected, u64::MAX);
    assert!(s.packets_received >= 3);
}

#[test]
fn huge_granule_positions_are_errors_not_overflows() {
    use elara_media::ogg::{FLAG_EOS, PageWriter};
    let opus = sample("speech.opus");
    let reader = MediaReader::new(&opus[..]).unwrap();
    let elara_media::ContainerConfig::OggOpus { head, tags, .. } = &reader.header().container
    else {
        panic!("not ogg opus");
    };
    let mut file = Vec::new();
    let mut w = PageWriter::new(&mut file, 1);
    w.push_packet(head, 0).unwrap();
    w.flush_page(0).unwrap();
    w.push_packet(tags, 0).unwrap();
    w.flush_page(0).unwrap();
    // Two 20 ms CELT packets; the page claims they end at u64::MAX - 1.
    w.push_packet(&[0xf8, 0], 0).unwrap();
    w.push_packet(&[0xf8, 0], u64::MAX - 1).unwrap();
    w.flush_page(0).unwrap();
    w.push_packet(&[0xf8, 0], 5).unwrap();
    w.flush_page(FLAG_EOS).unwrap();
    assert!(read_all(&file).is_err());
}

#[test]
fn hostile_wav_format_is_rejected_before_allocating() {
    let mut wav = sample("speech-8k.wav");
    // fmt chunk: channels at 22, sample rate at 24.
    wav[22..24].copy_from_slice(&u16::MAX.to_le_bytes());
    wav[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(read_all(&wav), Err(MediaError::TooLarge { .. })));
}
