//! The network model: access links with capacity and finite queues, latency from node coordinates
//! plus jitter, random and Gilbert-Elliott bursty loss, and the named presets.
//!
//! Every node has one access link (uplink and downlink, each a FIFO with a byte limit derived from
//! `queue_ms` of its capacity). The core between access links is uncongested: a message takes
//! `one_way(a, b)` plus exponential jitter. One-way latency grows with the distance between the
//! nodes' coordinates in a unit square, scaled so its mean over random pairs is the configured mean.

use rand::{Rng, RngCore};

use crate::scenario::{BurstSpec, Capacity, CapacityClass, NetworkSpec, Recovery};

/// Mean distance between two uniform random points of the unit square.
const MEAN_UNIT_SQUARE_DISTANCE: f64 = 0.521_405_433_2;
/// Share of the one-way latency that does not depend on distance (access and processing).
const FIXED_SHARE: f64 = 0.25;
/// Packet size used to turn per-packet loss into per-message loss.
pub const PACKET_BYTES: usize = 1200;
/// Transmission attempts before a QUIC-stream message is given up.
pub const MAX_ATTEMPTS: u32 = 4;

/// The resolved link model of a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkModel {
    /// Preset name it started from.
    pub preset: String,
    /// Mean one-way latency, µs.
    pub mean_one_way_us: f64,
    /// Mean exponential jitter, µs.
    pub jitter_us: f64,
    /// Random loss per packet.
    pub loss: f64,
    /// Bursty loss.
    pub burst: Option<BurstSpec>,
    /// Queue length in µs of capacity.
    pub queue_us: f64,
    /// Capacity classes of ordinary nodes.
    pub capacity: Vec<CapacityClass>,
    /// Capacity of the broadcaster.
    pub broadcaster: Capacity,
    /// Loss recovery.
    pub recovery: Recovery,
    /// Failure detection delay, µs.
    pub detect_us: u64,
}

/// The named presets, with one line each.
pub const PRESETS: [(&str, &str); 4] = [
    ("lan", "0.5 ms one-way, no loss, 1 Gbit/s everywhere"),
    (
        "broadband",
        "20 ms one-way, 0.1% loss, 20% at 100/20, 60% at 50/5, 20% at 10/1 Mbit/s (down/up)",
    ),
    (
        "cellular",
        "45 ms one-way, 10 ms jitter, 1% loss plus bursts, 30/8 and 10/2 Mbit/s",
    ),
    (
        "satellite",
        "280 ms one-way (GEO), 0.5% loss plus long bursts, 25/3 Mbit/s",
    ),
];

fn class(share: f64, down_mbps: f64, up_mbps: f64) -> CapacityClass {
    CapacityClass {
        share,
        down_mbps,
        up_mbps,
    }
}

impl LinkModel {
    fn preset(name: &str) -> Option<LinkModel> {
        let base = LinkModel {
            preset: name.to_owned(),
            mean_one_way_us: 20_000.0,
            jitter_us: 2_000.0,
            loss: 0.001,
            burst: None,
            queue_us: 300_000.0,
            capacity: vec![
                class(0.2, 100.0, 20.0),
                class(0.6, 50.0, 5.0),
                class(0.2, 10.0, 1.0),
            ],
            broadcaster: Capacity {
                down_mbps: 100.0,
                up_mbps: 20.0,
            },
            recovery: Recovery::QuicStream,
            detect_us: 1_000_000,
        };
        Some(match name {
            "broadband" => base,
            "lan" => LinkModel {
                mean_one_way_us: 500.0,
                jitter_us: 50.0,
                loss: 0.0,
                queue_us: 50_000.0,
                capacity: vec![class(1.0, 1000.0, 1000.0)],
                broadcaster: Capacity {
                    down_mbps: 1000.0,
                    up_mbps: 1000.0,
                },
                detect_us: 200_000,
                ..base
            },
            "cellular" => LinkModel {
                mean_one_way_us: 45_000.0,
                jitter_us: 10_000.0,
                loss: 0.01,
                burst: Some(BurstSpec {
                    p_enter: 0.002,
                    p_exit: 0.1,
                    loss: 0.3,
                }),
                capacity: vec![class(0.5, 30.0, 8.0), class(0.5, 10.0, 2.0)],
                ..base
            },
            "satellite" => LinkModel {
                mean_one_way_us: 280_000.0,
                jitter_us: 15_000.0,
                loss: 0.005,
                burst: Some(BurstSpec {
                    p_enter: 0.001,
                    p_exit: 0.05,
                    loss: 0.5,
                }),
                queue_us: 600_000.0,
                capacity: vec![class(1.0, 25.0, 3.0)],
                broadcaster: Capacity {
                    down_mbps: 50.0,
                    up_mbps: 20.0,
                },
                detect_us: 3_000_000,
                ..base
            },
            _ => return None,
        })
    }

    /// Resolves a scenario's network section (preset plus overrides), refusing impossible values
    /// with the field they are in.
    pub fn from_spec(spec: &NetworkSpec) -> Result<LinkModel, (String, String)> {
        let name = spec.preset.as_deref().unwrap_or("broadband");
        let mut m = LinkModel::preset(name).ok_or_else(|| {
            let known: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
            (
                "network.preset".to_owned(),
                format!("unknown preset `{name}` (known: {})", known.join(", ")),
            )
        })?;
        let field = |f: &str| format!("network.{f}");
        let check = |f: &str, v: f64, min: f64| -> Result<f64, (String, String)> {
            if v.is_finite() && v >= min {
                Ok(v)
            } else if v < 0.0 {
                Err((field(f), format!("cannot be negative (got {v})")))
            } else {
                Err((field(f), format!("must be at least {min} (got {v})")))
            }
        };
        if let Some(v) = spec.mean_one_way_ms {
            m.mean_one_way_us = check("mean_one_way_ms", v, 0.0)? * 1000.0;
        }
        if let Some(v) = spec.jitter_ms {
            m.jitter_us = check("jitter_ms", v, 0.0)? * 1000.0;
        }
        if let Some(v) = spec.loss {
            m.loss = check("loss", v, 0.0)?;
            if m.loss >= 1.0 {
                return Err((field("loss"), format!("must be below 1 (got {v})")));
            }
        }
        if let Some(b) = &spec.burst {
            for (f, v) in [
                ("burst.p_enter", b.p_enter),
                ("burst.p_exit", b.p_exit),
                ("burst.loss", b.loss),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err((field(f), format!("must be between 0 and 1 (got {v})")));
                }
            }
            if b.p_exit <= 0.0 {
                return Err((
                    field("burst.p_exit"),
                    "must be above 0 (bursts would never end)".into(),
                ));
            }
            m.burst = Some(b.clone());
        }
        if spec.no_burst {
            m.burst = None;
        }
        if let Some(v) = spec.queue_ms {
            m.queue_us = check("queue_ms", v, 1.0)? * 1000.0;
        }
        if let Some(classes) = &spec.capacity {
            if classes.is_empty() {
                return Err((field("capacity"), "needs at least one class".into()));
            }
            for (i, c) in classes.iter().enumerate() {
                if !(c.share.is_finite() && c.share >= 0.0) {
                    return Err((
                        field(&format!("capacity[{i}].share")),
                        format!("cannot be negative (got {})", c.share),
                    ));
                }
                check_capacity(&format!("capacity[{i}]"), c.down_mbps, c.up_mbps)?;
            }
            if classes.iter().map(|c| c.share).sum::<f64>() <= 0.0 {
                return Err((field("capacity"), "all shares are zero".into()));
            }
            m.capacity = classes.clone();
        }
        if let Some(b) = &spec.broadcaster {
            check_capacity("broadcaster", b.down_mbps, b.up_mbps)?;
            m.broadcaster = b.clone();
        }
        if let Some(r) = spec.recovery {
            m.recovery = r;
        }
        if let Some(v) = spec.failure_detect_ms {
            m.detect_us = (check("failure_detect_ms", v, 1.0)? * 1000.0) as u64;
        }
        Ok(m)
    }

    /// One-way base latency between two points, µs.
    pub fn one_way_us(&self, a: (f32, f32), b: (f32, f32)) -> u64 {
        let dx = f64::from(a.0 - b.0);
        let dy = f64::from(a.1 - b.1);
        let d = (dx * dx + dy * dy).sqrt();
        let v = self.mean_one_way_us
            * (FIXED_SHARE + (1.0 - FIXED_SHARE) * d / MEAN_UNIT_SQUARE_DISTANCE);
        v as u64
    }

    /// The smallest one-way latency between any two nodes, µs (jitter only adds to it): every
    /// message, connection and loss notice between two nodes lands at least this far ahead.
    pub fn min_one_way_us(&self) -> u64 {
        (self.mean_one_way_us * FIXED_SHARE) as u64
    }

    /// A jitter sample, µs.
    pub fn jitter_us<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        if self.jitter_us <= 0.0 {
            return 0;
        }
        let u: f64 = rng.random::<f64>();
        (-(1.0 - u).ln() * self.jitter_us) as u64
    }

    /// Whether a message of `len` bytes is hit by loss on a link whose receiving end is in the
    /// given Gilbert-Elliott state; advances that state.
    pub fn lost<R: Rng + ?Sized>(&self, len: usize, bad: &mut bool, rng: &mut R) -> bool {
        let packets = len.div_ceil(PACKET_BYTES).max(1) as i32;
        let mut p = self.loss;
        if let Some(b) = &self.burst {
            let step = |q: f64| 1.0 - (1.0 - q).powi(packets);
            if *bad {
                if rng.random_bool(step(b.p_exit).clamp(0.0, 1.0)) {
                    *bad = false;
                }
            } else if rng.random_bool(step(b.p_enter).clamp(0.0, 1.0)) {
                *bad = true;
            }
            if *bad {
                p = p.max(b.loss);
            }
        }
        if p <= 0.0 {
            return false;
        }
        let any = 1.0 - (1.0 - p).powi(packets);
        rng.random_bool(any.clamp(0.0, 1.0))
    }
}

/// A small, fast random generator (wyrand) for one node's network draws (jitter on what it
/// sends, loss on what it receives): each node has its own, seeded from the run's seed and its index, so
/// the draws do not depend on the order in which nodes act, nor on how they are spread over
/// threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeRng(u64);

impl NodeRng {
    /// A generator for `node` in a run seeded with `seed`.
    pub fn new(seed: u64, node: u32) -> NodeRng {
        NodeRng(seed ^ (u64::from(node) << 24) ^ 0x6e6f_6465_726e_6700)
    }
}

impl RngCore for NodeRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        (t as u64) ^ ((t >> 64) as u64)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn check_capacity(name: &str, down: f64, up: f64) -> Result<(), (String, String)> {
    for (f, v) in [("down_mbps", down), ("up_mbps", up)] {
        if !(v.is_finite() && v > 0.0) {
            return Err((
                format!("network.{name}.{f}"),
                format!("capacity must be above zero (got {v})"),
            ));
        }
        if v > 100_000.0 {
            return Err((
                format!("network.{name}.{f}"),
                format!("{v} Mbit/s is above 100 Gbit/s"),
            ));
        }
    }
    Ok(())
}

/// Microseconds to serialise `len` bytes at `bps` bits per second (at least 1).
pub fn tx_us(len: usize, bps: u64) -> u64 {
    ((len as u64 * 8_000_000).div_ceil(bps.max(1))).max(1)
}

/// Bytes a FIFO of rate `bps` still holds when busy until `busy_until`.
pub fn backlog_bytes(now: u64, busy_until: u64, bps: u64) -> u64 {
    busy_until.saturating_sub(now) * bps / 8_000_000
}

/// A receiver's downlink, booked when a message is *sent* (the sender knows when its first
/// packet will arrive) rather than when it arrives, so that a message costs the engine one event.
///
/// The link is a FIFO of booked work: `busy` is when the booked work ends and `block` how long
/// the contiguous stretch of booked work ending there is (µs). Bookings come in send order, and a
/// message sent later can arrive earlier (a nearer sender, a shorter uplink queue); the booking
/// keeps the link work-conserving without remembering every message:
///
/// - arriving when the link is idle (at or after `busy`), a message starts at once;
/// - arriving inside the booked stretch, it waits behind all of it (FIFO; the stretch may hold
///   work that arrives after it, which would really be served later: the error is bounded by the
///   stretch, i.e. by real queued work);
/// - arriving before the booked stretch starts, it goes first: it starts at once and, where it
///   overlaps the stretch, pushes the stretch's end back by the overlap (messages already booked
///   keep their times; the link's total work is kept).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Downlink {
    /// When the booked work ends, µs.
    pub busy: u64,
    /// Length of the contiguous booked stretch ending at `busy`, µs (saturates).
    pub block: u32,
}

impl Downlink {
    /// Books `len` bytes whose first packet arrives at `first` on a link of `bps` holding at most
    /// `queue` bytes; returns when the link starts receiving the message, or `None` when the
    /// queue ahead of it leaves no room (the message is dropped).
    pub fn book(&mut self, first: u64, len: usize, bps: u64, queue: u32) -> Option<u64> {
        let tx = tx_us(len, bps);
        let from = self.busy.saturating_sub(u64::from(self.block));
        let ahead = if first >= from {
            backlog_bytes(first, self.busy, bps)
        } else {
            0
        };
        if ahead + len as u64 > u64::from(queue) {
            return None;
        }
        let clamp = |us: u64| u32::try_from(us).unwrap_or(u32::MAX);
        if first >= self.busy {
            // Idle: a new stretch starts.
            self.busy = first + tx;
            self.block = clamp(tx);
            Some(first)
        } else if first >= from {
            // Inside the booked stretch: behind all of it.
            let start = self.busy;
            self.busy += tx;
            self.block = clamp(self.busy - from);
            Some(start)
        } else {
            // Before the booked stretch: first, pushing the stretch back where they overlap.
            let end = first + tx;
            if end > from {
                self.busy += end - from;
                self.block = clamp(self.busy - first);
            }
            Some(first)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn presets_resolve_and_overrides_apply() {
        for (name, _) in PRESETS {
            let spec = NetworkSpec {
                preset: Some(name.into()),
                ..Default::default()
            };
            LinkModel::from_spec(&spec).unwrap();
        }
        let spec = NetworkSpec {
            mean_one_way_ms: Some(40.0),
            loss: Some(0.01),
            ..Default::default()
        };
        let m = LinkModel::from_spec(&spec).unwrap();
        assert_eq!(m.mean_one_way_us, 40_000.0);
        assert_eq!(m.loss, 0.01);
        let bad = NetworkSpec {
            mean_one_way_ms: Some(-1.0),
            ..Default::default()
        };
        assert_eq!(
            LinkModel::from_spec(&bad).unwrap_err().0,
            "network.mean_one_way_ms"
        );
    }

    #[test]
    fn mean_latency_matches_configuration() {
        let m = LinkModel::preset("broadband").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 20_000;
        let mut sum = 0u64;
        for _ in 0..n {
            let a = (rng.random::<f32>(), rng.random::<f32>());
            let b = (rng.random::<f32>(), rng.random::<f32>());
            sum += m.one_way_us(a, b);
        }
        let mean = sum as f64 / f64::from(n);
        assert!((mean - 20_000.0).abs() < 500.0, "mean one-way {mean}");
    }

    #[test]
    fn loss_rate_is_close_to_configured() {
        let mut m = LinkModel::preset("lan").unwrap();
        m.loss = 0.05;
        // The engine's per-node generator, as it draws loss.
        let mut rng = NodeRng::new(1, 17);
        let mut bad = false;
        let lost = (0..20_000)
            .filter(|_| m.lost(100, &mut bad, &mut rng))
            .count();
        assert!((800..1200).contains(&lost), "{lost}");
        // Bursts raise the loss rate.
        m.burst = Some(BurstSpec {
            p_enter: 0.01,
            p_exit: 0.1,
            loss: 0.5,
        });
        let lost = (0..20_000)
            .filter(|_| m.lost(100, &mut bad, &mut rng))
            .count();
        assert!(lost > 1500, "{lost}");
    }

    #[test]
    fn fifo_arithmetic() {
        assert_eq!(tx_us(1250, 10_000_000), 1000);
        assert_eq!(backlog_bytes(0, 1000, 10_000_000), 1250);
        assert_eq!(backlog_bytes(2000, 1000, 10_000_000), 0);
    }

    /// The downlink booked in send order: idle, FIFO inside the booked stretch, an earlier
    /// arrival first, and the queue limit.
    #[test]
    fn downlink_booking() {
        // 8 Mbit/s: one byte per µs.
        let bps = 8_000_000;
        let mut d = Downlink::default();
        // Idle: starts on arrival.
        assert_eq!(d.book(1_000, 500, bps, 10_000), Some(1_000));
        assert_eq!((d.busy, d.block), (1_500, 500));
        // Arriving inside the stretch: behind it.
        assert_eq!(d.book(1_200, 300, bps, 10_000), Some(1_500));
        assert_eq!((d.busy, d.block), (1_800, 800));
        // Booked later but arriving before the stretch, fitting in front: first, stretch
        // unchanged.
        assert_eq!(d.book(400, 100, bps, 10_000), Some(400));
        assert_eq!((d.busy, d.block), (1_800, 800));
        // Arriving before the stretch and overlapping it: first, the stretch ends later by the
        // overlap (900 + 200 - 1,000).
        assert_eq!(d.book(900, 200, bps, 10_000), Some(900));
        assert_eq!((d.busy, d.block), (1_900, 1_000));
        // The queue ahead (1,900 - 1,000 = 900 bytes) leaves no room for 200 more in 1,000.
        assert_eq!(d.book(1_000, 200, bps, 1_000), None);
        assert_eq!((d.busy, d.block), (1_900, 1_000));
        // After the stretch: idle again, a new stretch.
        assert_eq!(d.book(5_000, 100, bps, 1_000), Some(5_000));
        assert_eq!((d.busy, d.block), (5_100, 100));
    }
}
