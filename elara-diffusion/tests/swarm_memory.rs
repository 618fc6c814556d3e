//! Heap bytes per swarm node: a counting global allocator measures what each node of a small
//! livestream swarm (one broadcaster, 150 viewers of which three in four can relay, a 30 fps
//! video state with a keyframe every 2 s, with or without a 50 /s audio state, 1% loss) owns,
//! right after joining and after 8 s of streaming, by dropping the nodes one at a time and
//! counting the bytes freed. Payloads are static (as in `elara-sim`), so they are nobody's;
//! the counts are requested bytes (the allocator's own per-block overhead, ~16 bytes a block
//! with glibc, comes on top: blocks are counted too).
//!
//! Run with `cargo test -p elara-diffusion@0.3.0 --test swarm_memory -- --nocapture` to see the
//! figures (they are quoted in the documentation of `SwarmNode`); the test asserts upper bounds
//! with some margin so that a regression shows.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use elara_core::{
    Capabilities, GroupId, InterestLevel, NodeId, Priority, StateId, StateUpdate, UpdateKind,
};
use elara_diffusion::harness::{Harness, LinkProfile};
use elara_diffusion::swarm::{SwarmConfig, SwarmNode};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BROADCASTER: u64 = 1;
const VIEWERS: u64 = 150;
const VIDEO: StateId = StateId(1);
const AUDIO: StateId = StateId(2);

static KEY: [u8; 12_000] = [0; 12_000];
static DELTA: [u8; 1_200] = [0; 1_200];
static OPUS: [u8; 120] = [0; 120];

fn caps(max_children: u16) -> Capabilities {
    Capabilities {
        upload_kbps: 3_000 * u32::from(max_children.max(1)),
        download_kbps: 50_000,
        max_children,
        codecs: 0,
        max_payload: 1 << 20,
    }
}

fn config(id: u64, max_children: u16) -> SwarmConfig {
    let mut c = SwarmConfig::new(NodeId::from_u64(id), caps(max_children))
        .with_seed(id.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .with_latency(Duration::from_secs(1), Duration::from_millis(333));
    if id != BROADCASTER {
        c = c.with_bootstrap(NodeId::from_u64(BROADCASTER));
    }
    c
}

/// The swarm after the viewers joined, and after `stream_s` seconds of video (and audio).
fn swarm(stream_s: u64, audio: bool) -> Harness {
    let link = LinkProfile {
        latency: Duration::from_millis(20),
        loss: 0.01,
        bandwidth: 12_500_000,
    };
    let mut h = Harness::new(4, link);
    h.record_events(false);
    h.add_node(config(BROADCASTER, 8));
    let b = NodeId::from_u64(BROADCASTER);
    h.node_mut(b).create_state(VIDEO).unwrap();
    if audio {
        h.node_mut(b).create_state(AUDIO).unwrap();
    }
    for i in 0..VIEWERS {
        let id = 100 + i;
        let k = [0u16, 1, 2, 4][(i % 4) as usize];
        h.add_node(config(id, k));
        let level = match i % 10 {
            0..=2 => InterestLevel::High,
            3..=7 => InterestLevel::Medium,
            _ => InterestLevel::Low,
        };
        let now = h.now();
        let n = h.node_mut(NodeId::from_u64(id));
        n.declare_interest(now, VIDEO, level);
        if audio {
            n.declare_interest(now, AUDIO, level);
        }
        h.run_for(Duration::from_millis(10));
    }
    h.run_for(Duration::from_secs(3));
    // 10 ms ticks: a video frame every 30 ms (keyframe every 2 s), audio every 20 ms.
    for tick in 0..stream_s * 100 {
        let now = h.now();
        let n = h.node_mut(b);
        if tick % 3 == 0 {
            let seq = tick / 3;
            let key = seq % 60 == 0;
            let mut u = StateUpdate::new(VIDEO, b, seq, now)
                .with_kind(UpdateKind::Video)
                .with_group(GroupId(seq / 60))
                .with_payload(Bytes::from_static(if key { &KEY } else { &DELTA }));
            if key {
                u = u.keyframe().with_priority(Priority::High);
            }
            n.publish(now, u).unwrap();
        }
        if audio && tick % 2 == 0 {
            let u = StateUpdate::new(AUDIO, b, tick / 2, now)
                .with_kind(UpdateKind::Audio)
                .with_priority(Priority::High)
                .with_payload(Bytes::from_static(&OPUS));
            n.publish(now, u).unwrap();
        }
        h.run_for(Duration::from_millis(10));
    }
    h
}

/// Heap bytes and blocks owned by `id`: freed when it is dropped (a fresh node takes its place
/// in the harness first).
fn owned(h: &mut Harness, id: u64) -> (isize, isize) {
    let fresh = SwarmNode::new(config(id, 0), h.now());
    let old = std::mem::replace(h.node_mut(NodeId::from_u64(id)), fresh);
    let (bytes, blocks) = (live_bytes(), live_blocks());
    drop(old);
    (bytes - live_bytes(), blocks - live_blocks())
}

fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn live_blocks() -> isize {
    LIVE_BLOCKS.load(Ordering::Relaxed)
}

/// Per-viewer figures: (bytes, blocks, children in the video tree).
fn measure(h: &mut Harness) -> (isize, Vec<(isize, isize, usize)>) {
    let viewers: Vec<(u64, usize)> = (0..VIEWERS)
        .map(|i| {
            let id = 100 + i;
            (id, h.node(NodeId::from_u64(id)).children(VIDEO).count())
        })
        .collect();
    let (b, _) = owned(h, BROADCASTER);
    let v = viewers
        .into_iter()
        .map(|(id, kids)| {
            let (bytes, blocks) = owned(h, id);
            (bytes, blocks, kids)
        })
        .collect();
    (b, v)
}

fn report(label: &str, broadcaster: isize, v: &[(isize, isize, usize)]) -> isize {
    let n = v.len() as isize;
    let mean = v.iter().map(|x| x.0).sum::<isize>() / n;
    let blocks = v.iter().map(|x| x.1).sum::<isize>() / n;
    let max = v.iter().map(|x| x.0).max().unwrap_or(0);
    println!(
        "{label}: broadcaster {broadcaster} B; viewers mean {mean} B in {blocks} blocks, max {max} B"
    );
    for kids in [0usize, 1, 2, 3, 4] {
        let sel: Vec<_> = v.iter().filter(|x| x.2 == kids).collect();
        if !sel.is_empty() {
            let m = sel.iter().map(|x| x.0).sum::<isize>() / sel.len() as isize;
            println!("  {kids} video children: {} viewers, mean {m} B", sel.len());
        }
    }
    mean
}

#[test]
fn heap_bytes_per_viewer_stay_small() {
    println!(
        "size_of: SwarmNode {} B, StateUpdate {} B",
        std::mem::size_of::<SwarmNode>(),
        std::mem::size_of::<StateUpdate>()
    );
    let mut figures = Vec::new();
    for audio in [false, true] {
        let what = if audio { "video + audio" } else { "video only" };
        for stream_s in [0, 8] {
            let mut h = swarm(stream_s, audio);
            let (b, v) = measure(&mut h);
            let label = if stream_s == 0 {
                format!("{what}, after joining")
            } else {
                format!("{what}, after {stream_s} s of streaming")
            };
            figures.push(report(&label, b, &v));
        }
    }
    let [video_joined, video_streaming, both_joined, both_streaming] = figures[..] else {
        unreachable!("four measurements");
    };
    assert!(video_joined < 8_000, "{video_joined} B per joined viewer");
    assert!(
        video_streaming < 12_000,
        "{video_streaming} B per streaming viewer"
    );
    assert!(both_joined < 10_000, "{both_joined} B per joined viewer");
    assert!(
        both_streaming < 20_000,
        "{both_streaming} B per streaming viewer"
    );
}
