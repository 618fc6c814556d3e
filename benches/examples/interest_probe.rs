//! The interest-registration workload without criterion, for counting instructions per entry
//! under `valgrind --tool=cachegrind`: builds `rounds` maps of 100,000 viewers of one state
//! (ELARA with `e`, ELARA after `reserve_nodes(100_000)` with `r`, the original 0.2.0 with
//! `o`) exactly as `benches/interest.rs` does. The maps
//! are leaked rather than dropped, because criterion's `iter_batched` drops them outside the
//! timed region; the difference between two round counts is the registration cost alone.
//!
//! `cargo run --release -p elara-benches --example interest_probe -- [e|r|o] [rounds]`
use elara_benches::{declare_all, node_id, register_all_original};
use elara_core::Time;

const N: u64 = 100_000;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let rounds: u32 = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(3);
    let ids: Vec<_> = (1..=N).map(node_id).collect();
    let original_ids: Vec<_> = (1..=N).map(original_core::NodeId::new).collect();
    let now = Time::from_secs(1);
    for _ in 0..rounds {
        if which == "o" {
            let map = register_all_original(original::InterestMap::new(), &original_ids);
            std::mem::forget(std::hint::black_box(map));
        } else {
            let mut map = elara_diffusion::InterestMap::new();
            if which == "r" {
                map.reserve_nodes(N as usize);
            }
            let map = declare_all(map, &ids, now);
            std::mem::forget(std::hint::black_box(map));
        }
    }
}
