//! Counters and a latency histogram: [`PropagationStats`].
//!
//! Everything is fixed-size: recording a send or a drop never allocates. The latency histogram
//! is log-linear (16 linear sub-buckets per power of two of microseconds, exact below 16 µs), so
//! a percentile is known to within 1/16 (6.25 %) of its value from about 16 µs to 12 days.

use std::fmt;
use std::time::Duration;

/// Why an update was not sent to a target.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[non_exhaustive]
pub enum DropReason {
    /// Older than its state's latency budget when scheduled.
    Stale = 0,
    /// A newer group of the same state has already been scheduled (or delivered to this
    /// target): the old group's updates are worthless.
    Superseded = 1,
    /// The link (or the node's uplink) could not carry it within the latency budget.
    RateLimited = 2,
    /// An enhancement layer dropped to save bandwidth (quality step 1: lower layer).
    LayerSkipped = 3,
    /// A delta dropped to save bandwidth, which also cuts the rest of its group (quality step
    /// 2 and 3: fewer frames, then keyframes only).
    FramesSkipped = 4,
    /// A delta whose group's keyframe the target did not get: it would not decode.
    MissingKeyframe = 5,
    /// The target link is not (or no longer) known to the scheduler.
    UnknownLink = 6,
    /// The driver reported that the send failed.
    SendFailed = 7,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 8;
    /// Every reason, in tag order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::Stale,
        DropReason::Superseded,
        DropReason::RateLimited,
        DropReason::LayerSkipped,
        DropReason::FramesSkipped,
        DropReason::MissingKeyframe,
        DropReason::UnknownLink,
        DropReason::SendFailed,
    ];

    /// A short snake_case name, for reports and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Stale => "stale",
            DropReason::Superseded => "superseded",
            DropReason::RateLimited => "rate_limited",
            DropReason::LayerSkipped => "layer_skipped",
            DropReason::FramesSkipped => "frames_skipped",
            DropReason::MissingKeyframe => "missing_keyframe",
            DropReason::UnknownLink => "unknown_link",
            DropReason::SendFailed => "send_failed",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
const OCTAVES: usize = 36;
/// Number of histogram buckets.
const BUCKETS: usize = SUB + OCTAVES * SUB;

/// A latency histogram with fixed log-linear buckets over microseconds.
///
/// ```
/// use elara_diffusion::stats::LatencyHistogram;
/// use std::time::Duration;
///
/// let mut h = LatencyHistogram::new();
/// for ms in 1..=100 {
///     h.record(Duration::from_millis(ms));
/// }
/// let p50 = h.percentile(0.5).as_millis();
/// assert!((47..=53).contains(&p50), "{p50}");
/// assert_eq!(h.count(), 100);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Counts of buckets `first..first + counts.len()`: the buckets from the lowest to the
    /// highest one recorded (both non-zero: the form is canonical, so the derived equality
    /// holds), nothing before the first sample. Latencies seen by one node cluster in a few
    /// dozen of the buckets, and every relay keeps a histogram.
    counts: Vec<u64>,
    first: usize,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("p50", &self.percentile(0.5))
            .field("p99", &self.percentile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros(); // >= SUB_BITS
    let sub = ((us >> (e - SUB_BITS)) as usize) & (SUB - 1);
    let i = SUB + (e - SUB_BITS) as usize * SUB + sub;
    i.min(BUCKETS - 1)
}

/// The largest value (µs) that falls in bucket `i`.
fn bucket_upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let e = ((i - SUB) / SUB) as u32 + SUB_BITS;
    let sub = ((i - SUB) % SUB) as u64;
    let width = 1u64 << (e - SUB_BITS);
    ((SUB as u64 + sub) << (e - SUB_BITS)) + width - 1
}

impl LatencyHistogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        LatencyHistogram {
            counts: Vec::new(),
            first: 0,
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.add(bucket_of(us), 1);
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    /// Number of recorded latencies.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest recorded latency (exact).
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// The mean latency (exact), zero when empty.
    pub fn mean(&self) -> Duration {
        Duration::from_micros(self.sum_us.checked_div(self.count).unwrap_or(0))
    }

    /// The latency below which a fraction `q` (0..=1) of the samples fall: the upper edge of the
    /// bucket holding that rank, never above the exact maximum. Zero when empty.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(bucket_upper(self.first + i).min(self.max_us));
            }
        }
        self.max()
    }

    /// Adds `n` (> 0) to bucket `b`, widening the stored range to include it.
    fn add(&mut self, b: usize, n: u64) {
        if self.counts.is_empty() {
            self.first = b;
            self.counts.push(n);
            return;
        }
        if b < self.first {
            let grow = self.first - b;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.first = b;
        } else if b >= self.first + self.counts.len() {
            self.counts.resize(b - self.first + 1, 0);
        }
        self.counts[b - self.first] += n;
    }

    /// Adds another histogram's samples into this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (i, &c) in other.counts.iter().enumerate() {
            if c > 0 {
                self.add(other.first + i, c);
            }
        }
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }
}

/// What the scheduler did: sends, drops by reason, bytes, and the latency of what was sent
/// (from the update's timestamp to the moment the driver reported the send).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropagationStats {
    /// Decisions to send (scheduled, before the driver reports the outcome).
    pub scheduled: u64,
    /// Bytes of those decisions.
    pub scheduled_bytes: u64,
    /// Sends the driver reported as done.
    pub sent: u64,
    /// Bytes the driver reported as sent.
    pub bytes_sent: u64,
    dropped: [u64; DropReason::COUNT],
    /// Latency of reported sends.
    pub latency: LatencyHistogram,
}

impl PropagationStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one send of `bytes` that took `latency` from production.
    pub fn record_sent(&mut self, bytes: u64, latency: Duration) {
        self.sent += 1;
        self.bytes_sent += bytes;
        self.latency.record(latency);
    }

    /// Counts `n` drops for `reason`.
    pub fn record_drops(&mut self, reason: DropReason, n: u64) {
        self.dropped[reason as usize] += n;
    }

    /// Drops counted for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// `(reason, count)` for every reason, in tag order.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.dropped[r as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_histograms_of_disjoint_ranges_equals_recording_everything_into_one() {
        let (mut low, mut high, mut all) = (
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        );
        for us in [3u64, 40, 41, 900] {
            low.record(Duration::from_micros(us));
            all.record(Duration::from_micros(us));
        }
        for us in [2_000_000u64, 70_000, 1] {
            high.record(Duration::from_micros(us));
            all.record(Duration::from_micros(us));
        }
        let mut merged = high.clone();
        merged.merge(&low);
        merged.merge(&LatencyHistogram::new());
        assert_eq!(merged, all);
        let mut empty = LatencyHistogram::new();
        empty.merge(&all);
        assert_eq!(empty, all);
        for q in [0.0, 0.3, 0.5, 0.9, 1.0] {
            assert_eq!(merged.percentile(q), all.percentile(q));
        }
        assert_eq!(all.percentile(0.0), Duration::from_micros(1));
        assert_eq!(all.max(), Duration::from_secs(2));
    }

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for us in (0..2_000_000u64).step_by(37).chain([u64::MAX / 4]) {
            let b = bucket_of(us);
            assert!(b >= last);
            last = b;
            if b < BUCKETS - 1 {
                assert!(bucket_upper(b) >= us, "{us} in {b}");
                assert!(b == 0 || bucket_upper(b - 1) < us, "{us} in {b}");
            }
        }
    }

    #[test]
    fn percentiles_are_within_a_sixteenth() {
        let mut h = LatencyHistogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us * 10));
        }
        for q in [0.1, 0.5, 0.9, 0.99] {
            let exact = (q * 10_000.0) * 10.0;
            let got = h.percentile(q).as_micros() as f64;
            assert!(
                (got - exact).abs() / exact <= 1.0 / 16.0,
                "{q}: {got} vs {exact}"
            );
        }
        assert_eq!(h.max(), Duration::from_micros(100_000));
        assert_eq!(h.percentile(1.0), Duration::from_micros(100_000));
        assert_eq!(LatencyHistogram::new().percentile(0.5), Duration::ZERO);
    }

    #[test]
    fn drops_by_reason() {
        let mut s = PropagationStats::new();
        s.record_drops(DropReason::Stale, 3);
        s.record_drops(DropReason::MissingKeyframe, 2);
        s.record_sent(100, Duration::from_millis(5));
        assert_eq!(s.dropped(DropReason::Stale), 3);
        assert_eq!(s.dropped_total(), 5);
        assert_eq!(s.sent, 1);
        assert_eq!(s.bytes_sent, 100);
        assert_eq!(s.drops().filter(|(_, n)| *n > 0).count(), 2);
        let mut other = s.latency.clone();
        other.merge(&s.latency);
        assert_eq!(other.count(), 2);
    }
}
