//! Throughput of the media hot paths.
//!
//! - `packetize_depacketize/vp8`: every frame of the committed VP8 sample (10 s, 300 frames,
//!   ~0.5 MB) cut into 1200-byte updates and reassembled by a fresh depacketizer; throughput is
//!   frame bytes per second. This is what every publisher and every viewer does per frame.
//! - `g711_encode/{ulaw,alaw}`: PCM16 → G.711 over one second of 8 kHz audio repeated to 1 MiB
//!   of PCM; throughput is PCM bytes per second (a gateway transcodes many calls at once).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use elara_core::{NodeId, StateId, Time};
use elara_media::{
    Delivery, Depacketizer, MediaFrame, MediaReader, Packetizer, PacketizerConfig, g711,
};

fn packetize_depacketize(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/testsrc-vp8.ivf");
    let mut reader = MediaReader::open(path).unwrap();
    let header = reader.header().clone();
    let frames: Vec<MediaFrame> = reader.by_ref().map(|f| f.unwrap()).collect();
    let total: usize = frames.iter().map(|f| f.data.len()).sum();
    let mut group = c.benchmark_group("packetize_depacketize");
    group.throughput(Throughput::Bytes(total as u64));
    let mut updates = Vec::with_capacity(total / 1000);
    group.bench_function("vp8", |b| {
        b.iter(|| {
            updates.clear();
            let config = PacketizerConfig::new(StateId(1), NodeId::from_u64(1));
            let mut packetizer = Packetizer::new(config, header.clone());
            for f in &frames {
                packetizer.push(f, &mut updates).unwrap();
            }
            let mut depacketizer = Depacketizer::new(StateId(1));
            let mut bytes = 0usize;
            for u in updates.drain(..) {
                depacketizer.push(u, Time::ZERO);
                while let Some(d) = depacketizer.poll(Time::ZERO) {
                    if let Delivery::Frame(f) = d {
                        bytes += f.frame.data.len();
                    }
                }
            }
            assert_eq!(bytes, total);
            black_box(bytes)
        })
    });
    group.finish();
}

fn g711_encode(c: &mut Criterion) {
    let wav = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/speech-8k.wav");
    let mut reader =
        elara_media::wav::WavReader::new(std::fs::File::open(wav).unwrap(), 20).unwrap();
    let speech = reader.read_all(1 << 20).unwrap();
    let pcm: Vec<i16> = speech.iter().copied().cycle().take(512 * 1024).collect();
    let mut out = Vec::with_capacity(pcm.len());
    let mut group = c.benchmark_group("g711_encode");
    group.throughput(Throughput::Bytes((pcm.len() * 2) as u64));
    group.bench_function("ulaw", |b| {
        b.iter(|| {
            g711::encode_ulaw(black_box(&pcm), &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("alaw", |b| {
        b.iter(|| {
            g711::encode_alaw(black_box(&pcm), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, packetize_depacketize, g711_encode);
criterion_main!(benches);
