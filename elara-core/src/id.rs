use std::fmt;

/// A node's identity: 32 bytes, derived by the transport from the node's long-lived public key.
///
/// Ordering is lexicographic on the bytes; group calls use it to decide which side of a pair
/// initiates the connection (the lower id). `Display` shows a short hex prefix (8 hex digits),
/// `Debug` the same prefix with the type name; [`NodeId::to_hex`] gives all 64 digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// The id as four big-endian words: comparing them in order is comparing the bytes
    /// lexicographically, in four integer compares instead of a `memcmp` call (ids are the keys
    /// of every ordered peer and child map, so this compare is on a node's hottest paths).
    fn words(&self) -> [u64; 4] {
        let w = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.0[i * 8..i * 8 + 8]);
            u64::from_be_bytes(b)
        };
        [w(0), w(1), w(2), w(3)]
    }
}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.words().cmp(&other.words())
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl NodeId {
    /// Length of a node id in bytes.
    pub const LEN: usize = 32;

    /// Wraps raw bytes (for example a hash of a public key).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        NodeId(bytes)
    }

    /// A deterministic id for tests and simulations: `n` big-endian in the first 8 bytes, so
    /// `from_u64(a) < from_u64(b)` exactly when `a < b`.
    pub const fn from_u64(n: u64) -> Self {
        let b = n.to_be_bytes();
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 8 {
            out[i] = b[i];
            i += 1;
        }
        NodeId(out)
    }

    /// The first 8 bytes as a big-endian integer; inverse of [`NodeId::from_u64`] for ids made by
    /// it, and a cheap well-mixed hash for ids derived from keys.
    pub fn prefix_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// All 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Identifies one piece of state with a single authority: an audio track, a video track, a chat log.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct StateId(pub u64);

impl fmt::Display for StateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state#{}", self.0)
    }
}

/// A group of updates that decode together: for video, the group of pictures started by a
/// keyframe. A newer group supersedes an older one that is still waiting to be sent.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct GroupId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_u64_orders_like_integers_and_displays_short_hex() {
        assert!(NodeId::from_u64(1) < NodeId::from_u64(2));
        assert!(NodeId::from_u64(255) < NodeId::from_u64(256));
        assert_eq!(
            NodeId::from_u64(0x0102_0304_0506_0708).to_string(),
            "01020304"
        );
        assert_eq!(NodeId::from_u64(77).prefix_u64(), 77);
        assert_eq!(NodeId::from_u64(1).to_hex().len(), 64);
    }

    proptest::proptest! {
        /// Ids order exactly as their bytes do (a lexicographic compare), whichever byte
        /// differs first: call setup and every ordered map rely on it.
        #[test]
        fn ids_order_as_their_bytes(a: [u8; 32], b: [u8; 32], same in 0usize..33) {
            let mut b = b;
            b[..same.min(32)].copy_from_slice(&a[..same.min(32)]);
            let (x, y) = (NodeId::from_bytes(a), NodeId::from_bytes(b));
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            proptest::prop_assert_eq!(x.partial_cmp(&y), Some(a.cmp(&b)));
        }
    }
}
