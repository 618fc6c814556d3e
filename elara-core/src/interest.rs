use std::fmt;

/// How much a node cares about a piece of state. Ordered: `None < Low < Medium < High < Critical`.
///
/// A relay's effective interest in a state is the strongest interest anywhere in its subtree.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[repr(u8)]
pub enum InterestLevel {
    /// Not interested: nothing is sent.
    #[default]
    None = 0,
    /// Background interest: keyframes only or the lowest layer.
    Low = 1,
    /// Normal viewer.
    Medium = 2,
    /// Focused viewer: full quality.
    High = 3,
    /// Must not miss anything (moderators, recorders, the active speaker's audio).
    Critical = 4,
}

impl InterestLevel {
    /// All levels, weakest first.
    pub const ALL: [InterestLevel; 5] = [
        InterestLevel::None,
        InterestLevel::Low,
        InterestLevel::Medium,
        InterestLevel::High,
        InterestLevel::Critical,
    ];

    /// The wire tag.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// From the wire tag; `None` (the Option) for an unknown tag.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => InterestLevel::None,
            1 => InterestLevel::Low,
            2 => InterestLevel::Medium,
            3 => InterestLevel::High,
            4 => InterestLevel::Critical,
            _ => return None,
        })
    }

    /// True for every level above [`InterestLevel::None`].
    pub const fn is_interested(self) -> bool {
        !matches!(self, InterestLevel::None)
    }

    /// A short lowercase name, for reports.
    pub const fn name(self) -> &'static str {
        match self {
            InterestLevel::None => "none",
            InterestLevel::Low => "low",
            InterestLevel::Medium => "medium",
            InterestLevel::High => "high",
            InterestLevel::Critical => "critical",
        }
    }
}

impl fmt::Display for InterestLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The urgency of an update on a link, independent of who wants it. Ordered: higher is sent first.
///
/// Media producers set it from the update's kind: control and audio are `Urgent`/`High`,
/// keyframes `High`, video deltas `Normal`, bulk state `Background`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[repr(u8)]
pub enum Priority {
    /// Sent only when nothing else waits.
    Background = 0,
    /// Ordinary updates such as video deltas.
    #[default]
    Normal = 1,
    /// Keyframes and audio.
    High = 2,
    /// Control state that must go first.
    Urgent = 3,
}

impl Priority {
    /// The wire tag.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
    /// From the wire tag; `None` for an unknown tag.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Priority::Background,
            1 => Priority::Normal,
            2 => Priority::High,
            3 => Priority::Urgent,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_and_round_trip() {
        assert!(InterestLevel::Low < InterestLevel::High);
        for l in InterestLevel::ALL {
            assert_eq!(InterestLevel::from_u8(l.as_u8()), Some(l));
        }
        assert_eq!(InterestLevel::from_u8(5), None);
        assert_eq!(Priority::from_u8(4), None);
        assert!(Priority::Urgent > Priority::Normal);
    }
}
