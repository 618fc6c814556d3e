//! # elara-simulations
//!
//! A deterministic discrete-event network simulator for ELARA. It answers "what happens to my
//! livestream or call with this many viewers, these links, this churn" by running node state
//! machines over a modelled network and measuring streaming quality per interest level.
//!
//! - **Engine** ([`engine`], [`queue`]): a binary heap of compact events ordered by time, then by
//!   insertion sequence; a node arena indexed by `u32`; one seeded ChaCha generator for the
//!   network and one seed per node. Nodes exchange *encoded* bytes (`elara_core::wire`), so the
//!   codec and its limits are exercised on every message.
//! - **Protocols** ([`protocol`]): every node implements the sans-IO contract of the swarm node
//!   (`handle_message`, `handle_timeout`, `publish`, `declare_interest`, `link_feedback`,
//!   `poll_transmit`, `poll_event`, `poll_timeout`, peer up/down). The [`baselines`] — direct
//!   star, random push gossip, the original ELARA 0.2.0 policy — run side by side with the node
//!   under test in the same run and report.
//! - **Network** ([`network`]): per-node uplink/downlink capacity with finite FIFO queues,
//!   heterogeneous capacity classes, latency from coordinates plus jitter, random and
//!   Gilbert-Elliott loss, QUIC-like loss recovery, named presets.
//! - **Scenarios** ([`scenario`], [`world`]): TOML files with churn, flash crowds, mass failures,
//!   partitions, synthetic or recorded workloads.
//! - **Metrics and reports** ([`metrics`], [`report`], [`plot`]): delivery ratio, continuity,
//!   startup delay, latency percentiles, duplicates, control overhead, upload, repair time; a
//!   terminal table, byte-identical JSON for a given seed, SVG plots, and `compare`.
//!
//! ```
//! use elara_simulations::{run, scenario::Scenario};
//! use std::path::Path;
//!
//! let text = r#"
//!     name = "tiny"
//!     kind = "livestream"
//!     viewers = 20
//!     duration_s = 2
//!     protocols = ["star", "elara-0.2"]
//! "#;
//! let scenario = Scenario::parse(Path::new("tiny.toml"), text, &[]).unwrap();
//! let report = run(scenario, 7, Vec::new(), 1, &|_, _, _| {}).unwrap();
//! assert_eq!(report.runs.len(), 2);
//! assert!(report.runs[0].levels[0].delivery_ratio > 0.9);
//! ```
#![deny(missing_docs)]

pub mod baselines;
pub mod elara;
pub mod engine;
pub mod metrics;
pub mod network;
pub mod plot;
pub mod protocol;
pub mod queue;
pub mod report;
pub mod scenario;
pub mod workload;
pub mod world;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::baselines::{gossip::Gossip, star::Star, tree020::Tree020};
use crate::elara::Elara;
use crate::protocol::ProtocolKind;
use crate::report::{Report, RunReport};
use crate::scenario::Scenario;
use crate::workload::RawFrames;
use crate::world::World;

/// Protocol names a scenario may list.
pub const PROTOCOLS: [&str; 4] = ["elara", "star", "gossip", "elara-0.2"];

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A workload file could not be used.
    #[error("workload: {0}")]
    Workload(String),
}

/// Most frames read from one media file.
pub const MAX_MEDIA_FRAMES: usize = 1_000_000;

/// Reads a recorded workload with `elara-media`'s container readers (Ogg Opus, IVF, H.264
/// Annex B at 30 fps, WAV): each frame's publish time (relative to the first), coded size and
/// keyframe flag (judged from the bitstream). `video` says which kind the scenario expects.
pub fn read_media(path: &Path, video: bool) -> Result<RawFrames, String> {
    let err = |e: elara_media::MediaError| format!("{}: {e}", path.display());
    let mut reader = elara_media::MediaReader::open(path).map_err(err)?;
    let kind = reader.header().codec.kind();
    let is_video = kind == elara_core::UpdateKind::Video;
    if is_video != video {
        return Err(format!(
            "{}: a {} file where the scenario expects {}",
            path.display(),
            if is_video { "video" } else { "audio" },
            if video { "video" } else { "audio" }
        ));
    }
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame().map_err(err)? {
        if frames.len() >= MAX_MEDIA_FRAMES {
            return Err(format!(
                "{}: more than {MAX_MEDIA_FRAMES} frames",
                path.display()
            ));
        }
        let size = u32::try_from(f.data.len()).unwrap_or(u32::MAX).max(1);
        frames.push((f.timestamp.as_micros(), size, f.keyframe));
    }
    if frames.is_empty() {
        return Err(format!("{}: no frames", path.display()));
    }
    if video && !frames[0].2 {
        return Err(format!(
            "{}: the video does not start with a keyframe",
            path.display()
        ));
    }
    Ok(frames)
}

/// Progress callback shared by the protocols' runs: protocol, simulated µs, events so far.
pub type ProgressFn<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

fn run_one<K: ProtocolKind + Sync>(
    world: &World,
    kind: &K,
    shards: usize,
    progress: ProgressFn<'_>,
) -> RunReport {
    let name = kind.name();
    engine::run(world, kind, shards, &|t, ev| progress(name, t, ev))
}

fn run_protocol(
    world: &World,
    protocol: &str,
    shards: usize,
    progress: ProgressFn<'_>,
) -> RunReport {
    let s = &world.scenario;
    match protocol {
        "elara" => run_one(world, &Elara, shards, progress),
        "star" => run_one(world, &Star, shards, progress),
        "gossip" => run_one(
            world,
            &Gossip {
                fanout: s.gossip.fanout as usize,
                view: s.gossip.view as usize,
            },
            shards,
            progress,
        ),
        "elara-0.2" => run_one(world, &Tree020, shards, progress),
        other => unreachable!("scenario validation admits only known protocols, got {other}"),
    }
}

/// How [`run`] uses `threads` for `protocols` runs: (runs side by side, threads per run).
pub fn plan_threads(threads: usize, protocols: usize) -> (usize, usize) {
    let threads = threads.max(1);
    let protocols = protocols.max(1);
    (
        threads.min(protocols),
        (threads / protocols).clamp(1, engine::MAX_SHARDS),
    )
}

/// Plans the world from `scenario` and `seed`, then runs every protocol the scenario lists over
/// it on up to `threads` threads: protocols side by side while there are more protocols than
/// threads, and each protocol's nodes split over `threads / protocols` threads otherwise (see
/// [`engine::run`]). The report is the same for any `threads`; peak memory grows with it.
/// `progress` is called with the protocol, the simulated µs and the events so far.
pub fn run(
    scenario: Scenario,
    seed: u64,
    overrides: Vec<String>,
    threads: usize,
    progress: ProgressFn<'_>,
) -> Result<Report, RunError> {
    let world = World::build(scenario, seed, &read_media).map_err(RunError::Workload)?;
    let s = &world.scenario;
    let (threads, shards) = plan_threads(threads, s.protocols.len());
    let runs: Vec<RunReport> = if threads == 1 {
        s.protocols
            .iter()
            .map(|p| run_protocol(&world, p, shards, progress))
            .collect()
    } else {
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<RunReport>>> =
            (0..s.protocols.len()).map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = s.protocols.get(i) else {
                            break;
                        };
                        let r = run_protocol(&world, p, shards, progress);
                        *slots[i].lock().unwrap() = Some(r);
                    }
                });
            }
        });
        slots
            .into_iter()
            .map(|m| m.into_inner().unwrap().expect("every protocol ran"))
            .collect()
    };
    Ok(Report {
        scenario: s.name.clone(),
        description: s.description.clone(),
        seed,
        nodes: world.nodes.len() as u64,
        duration_s: s.duration_s,
        stream_kbps: metrics::round2(world.stream_rate_bps() / 1e3),
        network: world.link.preset.clone(),
        overrides,
        runs,
    })
}
