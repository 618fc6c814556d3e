//! Streaming-quality metrics collected during a run and summarised per interest level.
//!
//! Definitions (per (viewer, track) pair, aggregated per interest level):
//! - **playback start** of a track: the publish time of the first independent frame (keyframe,
//!   or audio frame) delivered to the viewer. Frames before it are not expected.
//! - **expected frames**: frames of the track published from playback start (or, if playback
//!   never started, from the viewer's join) until the stream ends or until the viewer leaves minus
//!   the play-out deadline. Low-interest viewers expect video keyframes only (plus all audio).
//! - **delivery ratio**: expected frames delivered (at any time) / expected frames.
//! - **continuity index**: expected frames delivered within the play-out deadline of their publish
//!   time / expected frames.
//! - **startup delay**: first keyframe delivery minus join time (or stream start if later).
//! - **latency**: delivery time minus publish time, over delivered expected frames.
//! - A frame cut into fragments counts as delivered when its last missing fragment is, at that
//!   time.
//! - **duplicate ratio**: update messages received for a fragment (or whole frame) the node
//!   already had / unique ones received (network level, whatever the protocol later
//!   suppresses).
//! - **control overhead**: bytes of non-update messages / all bytes sent.
//! - **repair time**: per fault, time from the failure (or the heal) until the viewer is
//!   delivered a frame published after it.

use std::collections::BTreeMap;

use elara_core::InterestLevel;

use crate::protocol::Role;
use crate::report::{
    Counters, Distribution, LevelReport, RepairReport, RunReport, Series, UploadReport,
};
use crate::workload::{Frame, UnitRef};
use crate::world::{FaultPlan, World};

/// Latency histogram with 1 ms buckets up to 120 s.
#[derive(Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const HIST_MS: usize = 120_000;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; HIST_MS + 1],
            count: 0,
        }
    }
}

impl Histogram {
    /// Records one value in µs.
    pub fn record_us(&mut self, us: u64) {
        let ms = ((us / 1000) as usize).min(HIST_MS);
        self.buckets[ms] += 1;
        self.count += 1;
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..=1) in ms (upper edge of its bucket).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let target = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut acc = 0;
        for (ms, &n) in self.buckets.iter().enumerate() {
            acc += n;
            if acc >= target {
                return (ms + 1) as f64;
            }
        }
        HIST_MS as f64
    }

    /// CDF points `(ms, fraction)` at up to `points` latencies.
    pub fn cdf(&self, points: usize) -> Vec<(f64, f64)> {
        if self.count == 0 {
            return Vec::new();
        }
        let max = self.quantile_ms(0.999).max(1.0);
        let step = (max / points as f64).max(1.0);
        let mut out = Vec::new();
        let mut acc = 0u64;
        let mut next = step;
        for (ms, &n) in self.buckets.iter().enumerate() {
            acc += n;
            if (ms + 1) as f64 >= next {
                out.push(((ms + 1) as f64, acc as f64 / self.count as f64));
                next += step;
                if next > max + step {
                    break;
                }
            }
        }
        out
    }
}

fn bit(set: &[u64], i: u32) -> bool {
    set.get((i / 64) as usize)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set_bit(set: &mut [u64], i: u32) -> bool {
    let w = &mut set[(i / 64) as usize];
    let had = *w & (1 << (i % 64)) != 0;
    *w |= 1 << (i % 64);
    had
}

/// What is tallied per node.
#[derive(Clone, Copy)]
struct NodeTally {
    /// When the node first played video (`u64::MAX`: never).
    first_play_us: u64,
    /// Updates received for the first time.
    recv_unique: u32,
    /// Updates received again.
    recv_dup: u32,
}

/// What is tallied per (node, track).
#[derive(Clone, Copy)]
struct PairTally {
    /// Playback start: publish time of the first independent frame delivered (`u64::MAX`: none).
    from_us: u64,
    /// Expected frames delivered.
    got: u32,
    /// Expected frames delivered within the deadline.
    on_time: u32,
}

/// Everything measured during one protocol's run.
pub struct Collector {
    nt: usize,
    words: usize,
    deadline_us: u64,
    /// Per node, `words` words of one bit per frame: received over the network (all nodes in
    /// one allocation; pages of nodes that never receive stay untouched).
    received: Vec<u64>,
    /// Likewise: delivered to the application.
    delivered: Vec<u64>,
    /// Bytes each node sent.
    pub bytes_up: Vec<u64>,
    /// Per node (one record, so that an update received touches one cache line).
    per_node: Vec<NodeTally>,
    /// Per (node, track), `n * nt + t`.
    pairs: Vec<PairTally>,
    latency: [Histogram; 5],
    on_time_bucket: [Vec<u64>; 5],
    hops: Vec<u64>,
    repair: Vec<u64>,
    repair_from: Vec<u64>,
    /// Counters reported as they are.
    pub counters: Counters,
    /// The protocol's own counters, summed over nodes.
    pub protocol: BTreeMap<String, u64>,
}

impl Collector {
    /// A collector for `world`.
    pub fn new(world: &World) -> Collector {
        let n = world.nodes.len();
        let nt = world.track_count();
        let buckets = (world.stream_end_us / 1_000_000 + 1) as usize;
        let words = (world.frames.units as usize).div_ceil(64);
        Collector {
            nt,
            words,
            deadline_us: (world.scenario.playout.deadline_ms * 1000.0) as u64,
            received: vec![0; n * words],
            delivered: vec![0; n * words],
            bytes_up: vec![0; n],
            per_node: vec![
                NodeTally {
                    first_play_us: u64::MAX,
                    recv_unique: 0,
                    recv_dup: 0,
                };
                n
            ],
            pairs: vec![
                PairTally {
                    from_us: u64::MAX,
                    got: 0,
                    on_time: 0,
                };
                n * nt
            ],
            latency: Default::default(),
            on_time_bucket: std::array::from_fn(|_| vec![0; buckets]),
            hops: vec![0; 256],
            repair: vec![u64::MAX; n * world.faults.len()],
            repair_from: world.faults.iter().map(FaultPlan::repair_from_us).collect(),
            counters: Counters::default(),
            protocol: BTreeMap::new(),
        }
    }

    /// A message left `node`.
    pub fn on_send(&mut self, node: u32, len: usize, update: bool) {
        self.bytes_up[node as usize] += len as u64;
        self.counters.messages += 1;
        if update {
            self.counters.update_bytes += len as u64;
        } else {
            self.counters.control_bytes += len as u64;
        }
    }

    /// An update (unit `unit`) reached `node` over the network.
    pub fn on_receive(&mut self, node: u32, unit: u32) {
        let n = node as usize;
        let w = self.words;
        if set_bit(&mut self.received[n * w..(n + 1) * w], unit) {
            self.per_node[n].recv_dup += 1;
        } else {
            self.per_node[n].recv_unique += 1;
        }
    }

    /// Addresses [`Collector::on_receive`] and [`Collector::on_delivered`] will most likely
    /// touch for `node` receiving an update near `unit`, handed to `hint`.
    pub fn receive_hints(&self, node: usize, unit: u32, hint: impl Fn(*const u8)) {
        let w = node * self.words + (unit / 64) as usize;
        if let Some(r) = self.received.get(w) {
            hint(std::ptr::from_ref(r).cast());
        }
        if let Some(d) = self.delivered.get(w) {
            hint(std::ptr::from_ref(d).cast());
        }
        if let Some(t) = self.per_node.get(node) {
            hint(std::ptr::from_ref(t).cast());
        }
        if let Some(p) = self.pairs.get(node * self.nt) {
            hint(std::ptr::from_ref(p).cast());
        }
    }

    /// `node`'s protocol delivered update `u` to the application at `now_us`.
    pub fn on_delivered(&mut self, world: &World, node: u32, u: UnitRef, now_us: u64, hops: u8) {
        let n = node as usize;
        let w = self.words;
        let delivered = &mut self.delivered[n * w..(n + 1) * w];
        if set_bit(delivered, u.unit) {
            self.counters.violations_duplicate_delivery += 1;
            return;
        }
        let frame = u.frame;
        let f = world.frames.frames[frame as usize];
        let whole =
            |set: &[u64], f: &Frame| (f.unit..f.unit + u32::from(f.parts)).all(|i| bit(set, i));
        if !whole(delivered, &f) {
            return;
        }
        if !f.keyframe
            && let Some(k) = world.frames.keyframe_of(frame)
            && !whole(delivered, &world.frames.frames[k as usize])
        {
            self.counters.violations_missing_keyframe += 1;
        }
        self.hops[hops as usize] += 1;
        let t = f.track as usize;
        let level = world.level(node, t);
        if level == InterestLevel::None {
            self.counters.unwanted_deliveries += 1;
            return;
        }
        let video = world.frames.tracks[t].video;
        let pair = n * self.nt + t;
        if self.pairs[pair].from_us == u64::MAX && (f.keyframe || !video) {
            self.pairs[pair].from_us = f.time_us;
            if video && self.per_node[n].first_play_us == u64::MAX {
                self.per_node[n].first_play_us = now_us;
            }
        }
        if f.time_us < self.pairs[pair].from_us {
            return;
        }
        if level == InterestLevel::Low && video && !f.keyframe {
            return;
        }
        let leave = world.nodes[n].leave_us;
        if leave != u64::MAX && f.time_us + self.deadline_us >= leave {
            return;
        }
        self.pairs[pair].got += 1;
        let lat = now_us.saturating_sub(f.time_us);
        self.latency[level as usize].record_us(lat);
        if lat <= self.deadline_us {
            self.pairs[pair].on_time += 1;
            let b = (f.time_us / 1_000_000) as usize;
            if let Some(c) = self.on_time_bucket[level as usize].get_mut(b) {
                *c += 1;
            }
        }
        let nf = self.repair_from.len();
        for j in 0..nf {
            let from = self.repair_from[j];
            let slot = &mut self.repair[n * nf + j];
            if f.time_us >= from && *slot == u64::MAX {
                *slot = now_us.saturating_sub(from);
            }
        }
    }

    /// Adds what `other`, another shard's collector of the same run, measured: each node's
    /// records come from the one shard it ran in (the others hold their initial values), the
    /// totals add up.
    pub fn absorb(&mut self, other: Collector) {
        let or = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x |= *y);
        let add = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += *y);
        or(&mut self.received, &other.received);
        or(&mut self.delivered, &other.delivered);
        add(&mut self.bytes_up, &other.bytes_up);
        for (a, b) in self.per_node.iter_mut().zip(&other.per_node) {
            a.first_play_us = a.first_play_us.min(b.first_play_us);
            a.recv_unique += b.recv_unique;
            a.recv_dup += b.recv_dup;
        }
        for (a, b) in self.pairs.iter_mut().zip(&other.pairs) {
            a.from_us = a.from_us.min(b.from_us);
            a.got += b.got;
            a.on_time += b.on_time;
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            add(&mut a.buckets, &b.buckets);
            a.count += b.count;
        }
        for (a, b) in self.on_time_bucket.iter_mut().zip(&other.on_time_bucket) {
            add(a, b);
        }
        add(&mut self.hops, &other.hops);
        for (a, b) in self.repair.iter_mut().zip(&other.repair) {
            *a = (*a).min(*b);
        }
        self.counters.add(&other.counters);
        for (k, v) in other.protocol {
            *self.protocol.entry(k).or_insert(0) += v;
        }
    }

    /// Summarises the run.
    pub fn finish(self, world: &World, protocol: &str, events: u64) -> RunReport {
        let nt = self.nt;
        let frames = &world.frames;
        let stream_end = world.stream_end_us;
        let buckets = self.on_time_bucket[0].len();
        // Frame counts per track in [a, b), all or keyframes only.
        let count = |t: usize, a: u64, b: u64, keys_only: bool| -> u64 {
            if a >= b {
                return 0;
            }
            let tr = &frames.tracks[t];
            let list = if keys_only { &tr.keyframes } else { &tr.by_seq };
            let pos = |x: u64| list.partition_point(|&i| frames.frames[i as usize].time_us < x);
            (pos(b) - pos(a)) as u64
        };
        let first_frame_us = frames.frames.first().map_or(0, |f| f.time_us);
        #[derive(Default)]
        struct Acc {
            viewers: u64,
            expected: u64,
            got: u64,
            on_time: u64,
            video_expected: u64,
            video_on_time: u64,
            startup: Vec<u64>,
            never: u64,
            unique: u64,
            dup: u64,
            expected_bucket: Vec<u64>,
        }
        let mut acc: Vec<Acc> = (0..5)
            .map(|_| Acc {
                expected_bucket: vec![0; buckets],
                ..Acc::default()
            })
            .collect();
        let mut uploads = Vec::new();
        let mut publisher_up = Vec::new();
        for (n, plan) in world.nodes.iter().enumerate() {
            let end = plan.leave_us.min(world.end_us);
            let present = end.saturating_sub(plan.join_us);
            if plan.role != Role::Viewer && present > 0 {
                publisher_up.push(self.bytes_up[n] as f64 * 8.0 / (present as f64 / 1e6));
            }
            if plan.role == Role::Broadcaster {
                continue;
            }
            if present > 0 {
                uploads.push(self.bytes_up[n] as f64 * 8.0 / (present as f64 / 1e6));
            }
            let mut counted = [false; 5];
            for t in 0..nt {
                let l = world.level(n as u32, t) as usize;
                if l > 0 && !counted[l] {
                    counted[l] = true;
                    acc[l].viewers += 1;
                }
            }
            let level = world.node_level(n as u32);
            if level == InterestLevel::None {
                continue;
            }
            let a = &mut acc[level as usize];
            a.unique += u64::from(self.per_node[n].recv_unique);
            a.dup += u64::from(self.per_node[n].recv_dup);
            let start_ref = plan.join_us.max(first_frame_us);
            if self.per_node[n].first_play_us != u64::MAX {
                a.startup
                    .push(self.per_node[n].first_play_us.saturating_sub(start_ref));
            } else if plan.join_us + 5_000_000 < end.min(stream_end) {
                a.never += 1;
            }
            let until = if plan.leave_us == u64::MAX {
                stream_end
            } else {
                plan.leave_us
                    .saturating_sub(self.deadline_us)
                    .min(stream_end)
            };
            for t in 0..nt {
                let l = world.level(n as u32, t);
                if l == InterestLevel::None {
                    continue;
                }
                let pair = n * nt + t;
                let video = frames.tracks[t].video;
                let keys_only = l == InterestLevel::Low && video;
                let from = if self.pairs[pair].from_us != u64::MAX {
                    self.pairs[pair].from_us
                } else {
                    // Never started: expected from the first independent frame after joining.
                    let list = if video {
                        &frames.tracks[t].keyframes
                    } else {
                        &frames.tracks[t].by_seq
                    };
                    let p =
                        list.partition_point(|&i| frames.frames[i as usize].time_us < plan.join_us);
                    list.get(p)
                        .map_or(u64::MAX, |&i| frames.frames[i as usize].time_us)
                };
                let la = &mut acc[l as usize];
                let e = count(t, from, until, keys_only);
                la.expected += e;
                la.got += u64::from(self.pairs[pair].got);
                la.on_time += u64::from(self.pairs[pair].on_time);
                if video {
                    la.video_expected += e;
                    la.video_on_time += u64::from(self.pairs[pair].on_time);
                }
                if e > 0 {
                    let b0 = (from / 1_000_000) as usize;
                    let b1 = ((until.saturating_sub(1)) / 1_000_000) as usize;
                    for b in b0..=b1.min(buckets - 1) {
                        let lo = from.max(b as u64 * 1_000_000);
                        let hi = until.min((b as u64 + 1) * 1_000_000);
                        la.expected_bucket[b] += count(t, lo, hi, keys_only);
                    }
                }
            }
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let mut levels = Vec::new();
        let mut delivery_over_time = Vec::new();
        let mut latency_cdf = Vec::new();
        for l in InterestLevel::ALL.iter().rev() {
            let a = &mut acc[*l as usize];
            if a.viewers == 0 && a.expected == 0 {
                continue;
            }
            a.startup.sort_unstable();
            let h = &self.latency[*l as usize];
            levels.push(LevelReport {
                level: l.name().to_owned(),
                viewers: a.viewers,
                expected_frames: a.expected,
                delivery_ratio: round4(ratio(a.got, a.expected)),
                continuity: round4(ratio(a.on_time, a.expected)),
                video_continuity: round4(ratio(a.video_on_time, a.video_expected)),
                latency_p50_ms: h.quantile_ms(0.5),
                latency_p95_ms: h.quantile_ms(0.95),
                latency_p99_ms: h.quantile_ms(0.99),
                startup_p50_ms: quantile_ms(&a.startup, 0.5),
                startup_p95_ms: quantile_ms(&a.startup, 0.95),
                startup_max_ms: quantile_ms(&a.startup, 1.0),
                never_started: a.never,
                duplicate_ratio: round4(ratio(a.dup, a.unique)),
            });
            delivery_over_time.push(Series {
                label: l.name().to_owned(),
                points: (0..buckets)
                    .filter(|&b| a.expected_bucket[b] > 0)
                    .map(|b| {
                        (
                            b as f64,
                            round4(ratio(
                                self.on_time_bucket[*l as usize][b],
                                a.expected_bucket[b],
                            )),
                        )
                    })
                    .collect(),
            });
            latency_cdf.push(Series {
                label: l.name().to_owned(),
                points: h.cdf(60).into_iter().map(|(x, y)| (x, round4(y))).collect(),
            });
        }
        uploads.sort_by(f64::total_cmp);
        let stream = world.stream_rate_bps();
        let broadcaster_bps = if world.scenario.kind == crate::scenario::ScenarioKind::Livestream {
            publisher_up.first().copied().unwrap_or(0.0)
        } else {
            publisher_up.iter().sum::<f64>() / publisher_up.len().max(1) as f64
        };
        let upload = UploadReport {
            viewers: Distribution::of_sorted(&uploads, 1e-3),
            publisher_kbps: round2(broadcaster_bps / 1e3),
            publisher_x_stream: round2(broadcaster_bps / stream.max(1.0)),
            cdf: Series {
                label: protocol.to_owned(),
                points: cdf_points(&uploads, 1e-3, 60),
            },
        };
        let total_hops: u64 = self.hops.iter().sum();
        let hop_q = |q: f64| -> u64 {
            let target = ((total_hops as f64 * q).ceil() as u64).max(1);
            let mut c = 0;
            for (h, &n) in self.hops.iter().enumerate() {
                c += n;
                if c >= target {
                    return h as u64;
                }
            }
            0
        };
        let nf = self.repair_from.len();
        let repair = world
            .faults
            .iter()
            .enumerate()
            .map(|(j, f)| {
                let from = f.repair_from_us();
                let mut times = Vec::new();
                let mut never = 0;
                for (n, plan) in world.nodes.iter().enumerate() {
                    if plan.role == Role::Broadcaster
                        || plan.join_us > from
                        || plan.leave_us <= from + 2_000_000
                        || world.node_level(n as u32) == InterestLevel::None
                    {
                        continue;
                    }
                    match self.repair[n * nf + j] {
                        u64::MAX => never += 1,
                        t => times.push(t),
                    }
                }
                times.sort_unstable();
                RepairReport {
                    fault: f.label(),
                    viewers: times.len() as u64 + never,
                    p50_ms: quantile_ms(&times, 0.5),
                    p95_ms: quantile_ms(&times, 0.95),
                    max_ms: quantile_ms(&times, 1.0),
                    never_repaired: never,
                }
            })
            .collect();
        let total_bytes = self.counters.update_bytes + self.counters.control_bytes;
        let all_unique: u64 = self.per_node.iter().map(|x| u64::from(x.recv_unique)).sum();
        let all_dup: u64 = self.per_node.iter().map(|x| u64::from(x.recv_dup)).sum();
        let mut counters = self.counters;
        counters.events = events;
        RunReport {
            protocol: protocol.to_owned(),
            levels,
            duplicate_ratio: round4(ratio(all_dup, all_unique)),
            control_overhead: round4(ratio(counters.control_bytes, total_bytes)),
            upload,
            hops_p50: if total_hops > 0 { hop_q(0.5) } else { 0 },
            hops_p99: if total_hops > 0 { hop_q(0.99) } else { 0 },
            hops_max: self.hops.iter().rposition(|&n| n > 0).unwrap_or(0) as u64,
            repair,
            delivery_over_time,
            latency_cdf,
            counters,
            protocol_counters: self.protocol,
        }
    }
}

/// Rounds to 4 decimals (keeps JSON short and stable).
pub fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Rounds to 2 decimals.
pub fn round2(x: f64) -> f64 {
    (x * 1e2).round() / 1e2
}

fn quantile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    round2(sorted_us[i] as f64 / 1000.0)
}

/// CDF points of sorted values (scaled by `scale`), at most `points` of them.
pub fn cdf_points(sorted: &[f64], scale: f64, points: usize) -> Vec<(f64, f64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let n = sorted.len();
    let step = (n / points).max(1);
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (round2(sorted[i] * scale), round4((i + 1) as f64 / n as f64)))
        .collect();
    out.push((round2(sorted[n - 1] * scale), 1.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record_us(ms * 1000 - 500);
        }
        assert_eq!(h.quantile_ms(0.5), 50.0);
        assert_eq!(h.quantile_ms(0.99), 99.0);
        assert_eq!(h.quantile_ms(1.0), 100.0);
        let cdf = h.cdf(10);
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn bitsets() {
        let mut s = vec![0; 2];
        assert!(!set_bit(&mut s, 70));
        assert!(set_bit(&mut s, 70));
        assert!(bit(&s, 70) && !bit(&s, 69));
    }
}
