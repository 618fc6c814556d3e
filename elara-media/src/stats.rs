//! Receive statistics: packets received, duplicated and lost, loss rate, RFC 3550 interarrival
//! jitter, and what became of frames (delivered, late, concealed, dropped undecodable).

use std::time::Duration;

use elara_core::Time;

/// A snapshot of what a receiver saw. Packets are [`elara_core::StateUpdate`]s; frames are
/// complete media frames.
#[derive(Clone, Copy, PartialEq, Debug, Default)]
pub struct ReceiveStats {
    /// Distinct updates received (duplicates excluded; late arrivals included).
    pub packets_received: u64,
    /// Updates received again (already held, or too old to tell).
    pub packets_duplicate: u64,
    /// Updates expected from the sequence numbers seen: highest − first + 1.
    pub packets_expected: u64,
    /// Updates never received: expected − received (RFC 3550 §6.4.1 cumulative loss).
    pub packets_lost: u64,
    /// RFC 3550 interarrival jitter estimate, in microseconds.
    pub jitter_us: f64,
    /// Frames handed to the player.
    pub frames_delivered: u64,
    /// Frames that arrived after their playout time.
    pub frames_late: u64,
    /// Frame slots the player had to conceal (nothing arrived in time).
    pub frames_concealed: u64,
    /// Frames dropped before playout as undecodable (incomplete, or missing their keyframe).
    pub frames_dropped: u64,
}

impl ReceiveStats {
    /// Lost fraction of expected updates in percent (0.0 to 100.0).
    pub fn loss_rate_percent(&self) -> f64 {
        if self.packets_expected == 0 {
            0.0
        } else {
            self.packets_lost as f64 * 100.0 / self.packets_expected as f64
        }
    }

    /// The interarrival jitter as a duration.
    pub fn jitter(&self) -> Duration {
        Duration::from_nanos((self.jitter_us * 1000.0) as u64)
    }
}

/// Packet-level accounting of one track, fed in arrival order.
#[derive(Clone, Debug, Default)]
pub struct PacketStats {
    first_seq: Option<u64>,
    max_seq: u64,
    received: u64,
    duplicate: u64,
    last_transit: Option<i64>,
    jitter_us: f64,
}

impl PacketStats {
    /// Records a distinct update `seq`, produced at `timestamp`, that arrived at `arrival`.
    ///
    /// Jitter follows RFC 3550 §6.4.1 / A.8: with transit `D = arrival − timestamp`, each packet
    /// moves the estimate by `(|D_i − D_{i−1}| − J) / 16`.
    pub fn on_packet(&mut self, seq: u64, timestamp: Time, arrival: Time) {
        match self.first_seq {
            None => {
                self.first_seq = Some(seq);
                self.max_seq = seq;
            }
            Some(first) => {
                if seq < first {
                    // Reordered before the first one seen: widen the expected range.
                    self.first_seq = Some(seq);
                }
                self.max_seq = self.max_seq.max(seq);
            }
        }
        self.received += 1;
        // Microsecond clocks fit i64 for 292 000 years; wrapping keeps absurd peer timestamps
        // from panicking.
        let transit = (arrival.as_micros() as i64).wrapping_sub(timestamp.as_micros() as i64);
        if let Some(prev) = self.last_transit {
            let d = transit.wrapping_sub(prev).unsigned_abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Records a duplicate update.
    pub fn on_duplicate(&mut self) {
        self.duplicate += 1;
    }

    /// Fills the packet fields of `stats`.
    pub fn fill(&self, stats: &mut ReceiveStats) {
        let expected = self
            .first_seq
            .map_or(0, |f| (self.max_seq - f).saturating_add(1));
        stats.packets_received = self.received;
        stats.packets_duplicate = self.duplicate;
        stats.packets_expected = expected;
        stats.packets_lost = expected.saturating_sub(self.received);
        stats.jitter_us = self.jitter_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    #[test]
    fn loss_and_jitter_by_hand() {
        // Updates produced every 20 ms; arrivals: 0@100, 1@125, 3@165, 4@180 (2 lost).
        let mut p = PacketStats::default();
        p.on_packet(0, t(0), t(100)); // transit 100
        p.on_packet(1, t(20), t(125)); // transit 105: |5| -> J = 5/16
        p.on_packet(3, t(60), t(165)); // transit 105: |0| -> J = 5/16 - 5/256
        p.on_packet(4, t(80), t(180)); // transit 100: |5| -> J += (5 - J)/16
        let mut s = ReceiveStats::default();
        p.fill(&mut s);
        assert_eq!(s.packets_received, 4);
        assert_eq!(s.packets_expected, 5);
        assert_eq!(s.packets_lost, 1);
        assert!((s.loss_rate_percent() - 20.0).abs() < 1e-9);
        let mut j = 5000.0 / 16.0;
        j += (0.0 - j) / 16.0;
        j += (5000.0 - j) / 16.0;
        assert!((s.jitter_us - j).abs() < 1e-6, "{} vs {}", s.jitter_us, j);
    }
}
