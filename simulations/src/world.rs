//! The protocol-independent plan of a run: who joins when, with which links and interests, who
//! leaves or crashes, which frames are published. Built once from the scenario and the seed, then
//! shared by every protocol run so the comparison is like for like.

use elara_core::{InterestLevel, NodeId};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::network::LinkModel;
use crate::protocol::{Role, TrackEntry};
use crate::scenario::{CapacityClass, Fault, Scenario, ScenarioKind, VideoMode};
use crate::workload::{self, FrameLog, RawFrames};

/// One node's plan.
#[derive(Clone, Copy, Debug)]
pub struct NodePlan {
    /// Its role.
    pub role: Role,
    /// Join time, µs.
    pub join_us: u64,
    /// Leave time, µs (`u64::MAX`: stays).
    pub leave_us: u64,
    /// Leaves by crashing (no goodbye) rather than gracefully.
    pub crash: bool,
    /// Uplink, bit/s.
    pub up_bps: u64,
    /// Downlink, bit/s.
    pub down_bps: u64,
    /// Position for the latency model.
    pub pos: (f32, f32),
}

/// A fault resolved against the plan.
#[derive(Clone, Debug)]
pub enum FaultPlan {
    /// Victims already have `leave_us = at` and `crash = true` in the plan.
    MassFailure {
        /// When, µs.
        at_us: u64,
        /// How many nodes crashed.
        victims: u32,
    },
    /// Nodes with `side[i] == true` are cut off from the others.
    Partition {
        /// Start, µs.
        at_us: u64,
        /// Heal, µs.
        heal_us: u64,
        /// Side per node.
        side: Vec<bool>,
    },
}

impl FaultPlan {
    /// The time after which delivery should be repaired (failure time, or heal time).
    pub fn repair_from_us(&self) -> u64 {
        match self {
            FaultPlan::MassFailure { at_us, .. } => *at_us,
            FaultPlan::Partition { heal_us, .. } => *heal_us,
        }
    }

    /// A short label.
    pub fn label(&self) -> String {
        match self {
            FaultPlan::MassFailure { at_us, victims } => {
                format!(
                    "mass failure at {:.1} s ({victims} nodes)",
                    *at_us as f64 / 1e6
                )
            }
            FaultPlan::Partition { at_us, heal_us, .. } => format!(
                "partition {:.1}-{:.1} s",
                *at_us as f64 / 1e6,
                *heal_us as f64 / 1e6
            ),
        }
    }
}

/// Everything a run needs that does not depend on the protocol.
pub struct World {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// The link model.
    pub link: LinkModel,
    /// Node plans; a node's index is its position, its id `NodeId::from_u64(index + 1)`.
    pub nodes: Vec<NodePlan>,
    /// Interest of node `n` in track `t` at `levels[n * tracks + t]`.
    pub levels: Vec<InterestLevel>,
    /// The published frames.
    pub frames: FrameLog,
    /// The directory every node is given.
    pub directory: Vec<TrackEntry>,
    /// Faults.
    pub faults: Vec<FaultPlan>,
    /// When publishing stops, µs.
    pub stream_end_us: u64,
    /// When the simulation stops, µs.
    pub end_us: u64,
}

/// A node's id from its index.
pub fn node_id(index: u32) -> NodeId {
    NodeId::from_u64(u64::from(index) + 1)
}

/// A node's index from its id, if it could be one of `n` nodes.
pub fn node_index(id: &NodeId, n: usize) -> Option<u32> {
    let v = id.prefix_u64().checked_sub(1)?;
    if v < n as u64 && *id == NodeId::from_u64(v + 1) {
        Some(v as u32)
    } else {
        None
    }
}

fn secs(s: f64) -> u64 {
    (s * 1e6).round().max(0.0) as u64
}

fn pick_class<'a>(classes: &'a [CapacityClass], rng: &mut ChaCha8Rng) -> &'a CapacityClass {
    let total: f64 = classes.iter().map(|c| c.share).sum();
    let mut x = rng.random::<f64>() * total;
    for c in classes {
        if x < c.share {
            return c;
        }
        x -= c.share;
    }
    classes
        .last()
        .expect("validated: at least one capacity class")
}

fn pick_level(s: &Scenario, rng: &mut ChaCha8Rng) -> InterestLevel {
    let m = &s.interest;
    let shares = [
        (InterestLevel::Critical, m.critical),
        (InterestLevel::High, m.high),
        (InterestLevel::Medium, m.medium),
        (InterestLevel::Low, m.low),
    ];
    let total: f64 = shares.iter().map(|x| x.1).sum();
    let mut x = rng.random::<f64>() * total;
    for (l, share) in shares {
        if x < share {
            return l;
        }
        x -= share;
    }
    InterestLevel::Medium
}

fn exp_sample(rng: &mut ChaCha8Rng, rate_per_s: f64) -> f64 {
    let u: f64 = rng.random::<f64>();
    -(1.0 - u).ln() / rate_per_s
}

/// Error building the world from the media files of a scenario.
pub type MediaError = String;

impl World {
    /// Plans a run. `media` reads a real-media workload (video or audio file) into raw frames;
    /// it is only called for `mode = "file"` workloads.
    pub fn build(
        scenario: Scenario,
        seed: u64,
        media: &dyn Fn(&std::path::Path, bool) -> Result<RawFrames, MediaError>,
    ) -> Result<World, MediaError> {
        let link = LinkModel::from_spec(&scenario.network)
            .map_err(|(f, p)| format!("field `{f}`: {p}"))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x05ee_d0fe_1a2a);
        let s = &scenario;
        let stream_end_us = secs(s.duration_s);
        let end_us = stream_end_us + secs(s.drain_s);
        let mut nodes: Vec<NodePlan> = Vec::new();
        let new_node =
            |nodes: &mut Vec<NodePlan>, role: Role, join_us: u64, rng: &mut ChaCha8Rng| {
                let (down, up) = if role == Role::Broadcaster {
                    (link.broadcaster.down_mbps, link.broadcaster.up_mbps)
                } else {
                    let c = pick_class(&link.capacity, rng);
                    (c.down_mbps, c.up_mbps)
                };
                nodes.push(NodePlan {
                    role,
                    join_us,
                    leave_us: u64::MAX,
                    crash: false,
                    up_bps: (up * 1e6) as u64,
                    down_bps: (down * 1e6) as u64,
                    pos: (rng.random::<f32>(), rng.random::<f32>()),
                });
            };
        let publishers: u32;
        match s.kind {
            ScenarioKind::Livestream => {
                publishers = 1;
                new_node(&mut nodes, Role::Broadcaster, 0, &mut rng);
                for _ in 0..s.viewers {
                    let t = secs(rng.random::<f64>() * s.join_over_s);
                    new_node(&mut nodes, Role::Viewer, t, &mut rng);
                }
                if let Some(f) = &s.flash_crowd {
                    for _ in 0..f.viewers {
                        let t = secs(f.start_s + rng.random::<f64>() * f.over_s);
                        new_node(&mut nodes, Role::Viewer, t, &mut rng);
                    }
                }
            }
            ScenarioKind::Call => {
                publishers = s.participants;
                for i in 0..s.nodes {
                    let role = if i < s.participants {
                        Role::Participant
                    } else {
                        Role::Viewer
                    };
                    let t = secs(rng.random::<f64>() * s.join_over_s);
                    new_node(&mut nodes, role, t, &mut rng);
                }
            }
        }
        // Churn: every non-publisher leaves after an exponential time; replacements and extra
        // joins arrive as Poisson processes.
        let c = &s.churn;
        let leave_rate = c.leave_per_min / 60.0;
        let base_population = nodes.len() as f64 - f64::from(publishers);
        let join_rate = leave_rate * base_population + c.join_per_s;
        if join_rate > 0.0 {
            let mut t = c.start_s.max(0.0);
            loop {
                t += exp_sample(&mut rng, join_rate);
                if t >= s.duration_s {
                    break;
                }
                new_node(&mut nodes, Role::Viewer, secs(t), &mut rng);
            }
        }
        if leave_rate > 0.0 {
            for n in nodes.iter_mut().skip(publishers as usize) {
                let from = (n.join_us as f64 / 1e6).max(c.start_s);
                let t = from + exp_sample(&mut rng, leave_rate);
                if t < s.duration_s {
                    n.leave_us = secs(t);
                    n.crash = rng.random_bool(c.crash_share);
                }
            }
        }
        // Faults.
        let mut faults = Vec::new();
        for f in &s.faults {
            match f {
                Fault::MassFailure { at_s, fraction } => {
                    let at = secs(*at_s);
                    let mut alive: Vec<u32> = (publishers..nodes.len() as u32)
                        .filter(|&i| {
                            let n = &nodes[i as usize];
                            n.join_us <= at && n.leave_us > at
                        })
                        .collect();
                    alive.shuffle(&mut rng);
                    let k = (alive.len() as f64 * fraction).round() as usize;
                    let mut victims = alive[..k].to_vec();
                    victims.sort_unstable();
                    for v in &victims {
                        let n = &mut nodes[*v as usize];
                        n.leave_us = at;
                        n.crash = true;
                    }
                    faults.push(FaultPlan::MassFailure {
                        at_us: at,
                        victims: k as u32,
                    });
                }
                Fault::Partition {
                    at_s,
                    heal_s,
                    fraction,
                } => {
                    let side = (0..nodes.len())
                        .map(|i| i >= publishers as usize && rng.random_bool(*fraction))
                        .collect();
                    faults.push(FaultPlan::Partition {
                        at_us: secs(*at_s),
                        heal_us: secs(*heal_s),
                        side,
                    });
                }
            }
        }
        // Tracks and frames.
        let mut raw: Vec<(u32, bool, RawFrames)> = Vec::new();
        let v = &s.workload.video;
        let a = &s.workload.audio;
        let video_rec = match (&v.mode, &v.file) {
            (VideoMode::File, Some(f)) if v.enabled => Some(media(f, true)?),
            _ => None,
        };
        let audio_rec = match &a.file {
            Some(f) if a.enabled => Some(media(f, false)?),
            _ => None,
        };
        for p in 0..publishers {
            // Call participants start at a random phase so their frames interleave.
            let start = if s.kind == ScenarioKind::Call {
                secs(rng.random::<f64>() * 0.03)
            } else {
                0
            };
            if v.enabled {
                let frames = match &video_rec {
                    Some(rec) => workload::loop_recording(rec, start, stream_end_us),
                    None => workload::synthetic_video(v, start, stream_end_us, &mut rng),
                };
                raw.push((p, true, frames));
            }
            if a.enabled {
                let frames = match &audio_rec {
                    Some(rec) => workload::loop_recording(rec, start, stream_end_us),
                    None => workload::synthetic_audio(a, start, stream_end_us),
                };
                raw.push((p, false, frames));
            }
        }
        let frames = FrameLog::build(raw, v.fragment_bytes);
        let directory: Vec<TrackEntry> = frames
            .tracks
            .iter()
            .map(|t| TrackEntry {
                state: t.state,
                authority: node_id(t.authority),
                video: t.video,
            })
            .collect();
        // Interests: a viewer has one level for the whole livestream; a call participant one
        // level per other participant.
        let nt = frames.tracks.len();
        let mut levels = vec![InterestLevel::None; nodes.len() * nt];
        for (n, plan) in nodes.iter().enumerate() {
            match (s.kind, plan.role) {
                (_, Role::Broadcaster) => {}
                (ScenarioKind::Livestream, _) => {
                    let l = pick_level(s, &mut rng);
                    levels[n * nt..(n + 1) * nt].fill(l);
                }
                (ScenarioKind::Call, _) => {
                    for p in 0..publishers {
                        if p as usize == n {
                            continue;
                        }
                        let l = pick_level(s, &mut rng);
                        for (t, track) in frames.tracks.iter().enumerate() {
                            if track.authority == p {
                                levels[n * nt + t] = l;
                            }
                        }
                    }
                }
            }
        }
        Ok(World {
            scenario,
            seed,
            link,
            nodes,
            levels,
            frames,
            directory,
            faults,
            stream_end_us,
            end_us,
        })
    }

    /// Number of tracks.
    pub fn track_count(&self) -> usize {
        self.frames.tracks.len()
    }

    /// Interest of node `n` in track `t`.
    pub fn level(&self, n: u32, t: usize) -> InterestLevel {
        self.levels[n as usize * self.track_count() + t]
    }

    /// The strongest interest of node `n` in any track (its "viewer level" in reports).
    pub fn node_level(&self, n: u32) -> InterestLevel {
        let nt = self.track_count();
        self.levels[n as usize * nt..(n as usize + 1) * nt]
            .iter()
            .copied()
            .max()
            .unwrap_or(InterestLevel::None)
    }

    /// Combined bit rate of one publisher (payload plus framing), bit/s.
    pub fn stream_rate_bps(&self) -> f64 {
        self.frames.publisher_rate_bps(0, self.stream_end_us.max(1))
    }
}
