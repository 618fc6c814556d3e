//! Measures the memory an [`InterestMap`] needs per viewer with a counting global allocator:
//! 1,000,000 viewers of one state must cost at most 64 bytes each, and the map's own exact
//! capacity accounting (`heap_bytes`) must agree with what the allocator saw.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use elara_core::{InterestLevel, NodeId, StateId, Time};
use elara_diffusion::InterestMap;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_million_viewers_of_one_state_cost_at_most_64_bytes_each() {
    const VIEWERS: u64 = 1_000_000;
    let now = Time::from_secs(1);
    let state = StateId(1);
    let before = LIVE.load(Ordering::Relaxed);
    let mut map = InterestMap::with_hash_seed(7);
    for i in 0..VIEWERS {
        let level = match i % 10 {
            0 => InterestLevel::High,
            1..=6 => InterestLevel::Medium,
            _ => InterestLevel::Low,
        };
        // Ids that look like key hashes, not small integers.
        let id = NodeId::from_u64(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        map.declare(now, id, state, level, None).unwrap();
    }
    let counted = (LIVE.load(Ordering::Relaxed) - before) as usize;
    let accounted = map.heap_bytes();
    let per_viewer = counted as f64 / VIEWERS as f64;
    println!("{per_viewer:.2} bytes per viewer (counted {counted}, accounted {accounted})");
    assert_eq!(map.len(), VIEWERS as usize);
    assert_eq!(map.interested(state, now).count(), VIEWERS as usize);
    assert!(per_viewer <= 64.0, "{per_viewer} bytes per viewer");
    // The exact capacity accounting matches the allocator within 1%.
    let diff = counted.abs_diff(accounted) as f64 / counted as f64;
    assert!(diff < 0.01, "counted {counted} vs accounted {accounted}");
    // Iterating allocates nothing.
    let before_iter = LIVE.load(Ordering::Relaxed);
    let high = map
        .interested(state, now)
        .filter(|(_, l)| *l == InterestLevel::High)
        .count();
    assert_eq!(high, (VIEWERS / 10) as usize);
    assert_eq!(LIVE.load(Ordering::Relaxed), before_iter);
}
