//! Wire codec throughput for the message that dominates traffic: a `StateUpdate` carrying a
//! 1,200-byte payload (one video packet). Every relay decodes each update it receives and
//! encodes it again for each child, so the codec must run well above link speed (target:
//! decode ≥ 1 GB/s). Throughput is in encoded bytes.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use elara_core::{GroupId, Message, NodeId, StateId, StateUpdate, Time, UpdateKind, wire};

fn message() -> Message {
    let update = StateUpdate::new(
        StateId(7),
        NodeId::from_u64(42),
        1_000,
        Time::from_millis(5),
    )
    .with_kind(UpdateKind::Video)
    .with_group(GroupId(33))
    .with_payload(Bytes::from(vec![0xAB; 1200]));
    Message::Update { hops: 2, update }
}

fn codec(c: &mut Criterion) {
    let msg = message();
    let encoded = msg.to_bytes();
    let mut group = c.benchmark_group("wire_update_1200");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    let mut buf = BytesMut::with_capacity(2 * encoded.len());
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&msg).encode(&mut buf);
            black_box(buf.len())
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| black_box(wire::decode(black_box(&encoded)).expect("valid frame")))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
