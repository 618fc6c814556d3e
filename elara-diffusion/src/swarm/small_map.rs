//! An ordered map that is a sorted `Vec` while small and a `BTreeMap` once large.
//!
//! A swarm node's maps (peers, states, children, timers) hold a handful of entries at almost
//! every node — a viewer has one or two states and a few peers — but hundreds or thousands at
//! the broadcaster. A `BTreeMap` allocates an 11-slot leaf as soon as it holds one entry (about
//! 10 KB for a map of 880-byte values); a sorted `Vec` holds what it needs and is searched by
//! bisection. Past [`SPILL`] entries the map moves into a `BTreeMap`, so that inserting and
//! removing stay logarithmic at the broadcaster; it moves back below [`UNSPILL`].
//!
//! Both forms iterate in key order, so which one a map is in never changes what a node does.

use std::collections::BTreeMap;
use std::collections::btree_map;

/// Entries above which the map becomes a `BTreeMap`.
const SPILL: usize = 32;
/// Entries below which a `BTreeMap` goes back to a sorted `Vec`.
const UNSPILL: usize = 16;

/// Makes room for one more element in `v`, growing it by a quarter (not the doubling of
/// `Vec::push`): these vectors are many and small, and inserts into them are rare next to
/// lookups.
pub(crate) fn grow_by_quarter<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 4).max(1));
    }
}

/// Gives back `v`'s spare room beyond a quarter of its length (the room [`grow_by_quarter`]
/// adds), so that a vector that grew and shrank again does not keep its peak.
pub(crate) fn shrink_spare<T>(v: &mut Vec<T>) {
    let len = v.len();
    if v.capacity() > len + len / 4 + 1 {
        v.shrink_to(len + len / 4);
    }
}

/// An ordered map: a sorted `Vec` up to [`SPILL`] entries, a `BTreeMap` beyond.
#[derive(Debug, Clone)]
pub(crate) enum SmallMap<K, V> {
    /// Sorted by key, no duplicates.
    Small(Vec<(K, V)>),
    /// More than [`SPILL`] entries (until it shrinks below [`UNSPILL`]).
    Large(BTreeMap<K, V>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Small(Vec::new())
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    /// An empty map (no allocation).
    pub fn new() -> Self {
        SmallMap::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            SmallMap::Small(v) => v.len(),
            SmallMap::Large(m) => m.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        match self {
            SmallMap::Small(v) => v
                .binary_search_by(|(k, _)| k.cmp(key))
                .ok()
                .map(|i| &v[i].1),
            SmallMap::Large(m) => m.get(key),
        }
    }

    /// The value of `key`, mutably.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self {
            SmallMap::Small(v) => match v.binary_search_by(|(k, _)| k.cmp(key)) {
                Ok(i) => Some(&mut v[i].1),
                Err(_) => None,
            },
            SmallMap::Large(m) => m.get_mut(key),
        }
    }

    /// True when `key` has an entry.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            SmallMap::Small(v) => match v.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => Some(std::mem::replace(&mut v[i].1, value)),
                Err(i) => {
                    grow_by_quarter(v);
                    v.insert(i, (key, value));
                    self.maybe_spill();
                    None
                }
            },
            SmallMap::Large(m) => m.insert(key, value),
        }
    }

    /// The value of `key`, inserting `make()` first when absent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self {
            SmallMap::Small(v) => match v.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => i,
                Err(i) if v.len() < SPILL => {
                    grow_by_quarter(v);
                    v.insert(i, (key, make()));
                    i
                }
                Err(_) => {
                    self.spill();
                    return self.get_or_insert_with(key, make);
                }
            },
            SmallMap::Large(m) => return m.entry(key).or_insert_with(make),
        };
        match self {
            SmallMap::Small(v) => &mut v[i].1,
            SmallMap::Large(_) => unreachable!("a small map stays small while inserting"),
        }
    }

    /// The value of `key`, inserting the default first when absent.
    pub fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        self.get_or_insert_with(key, V::default)
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let removed = match self {
            SmallMap::Small(v) => match v.binary_search_by(|(k, _)| k.cmp(key)) {
                Ok(i) => Some(v.remove(i).1),
                Err(_) => None,
            },
            SmallMap::Large(m) => m.remove(key),
        };
        if removed.is_some() {
            self.after_remove();
        }
        removed
    }

    /// The entry with the smallest key.
    pub fn first_key_value(&self) -> Option<(&K, &V)> {
        match self {
            SmallMap::Small(v) => v.first().map(|(k, v)| (k, v)),
            SmallMap::Large(m) => m.first_key_value(),
        }
    }

    /// Removes and returns the entry with the smallest key.
    pub fn pop_first(&mut self) -> Option<(K, V)> {
        let popped = match self {
            SmallMap::Small(v) if v.is_empty() => None,
            SmallMap::Small(v) => Some(v.remove(0)),
            SmallMap::Large(m) => m.pop_first(),
        };
        if popped.is_some() {
            self.after_remove();
        }
        popped
    }

    /// The entries as a sorted slice while the map is small (`None` once it is a B-tree).
    pub fn as_slice(&self) -> Option<&[(K, V)]> {
        match self {
            SmallMap::Small(v) => Some(v),
            SmallMap::Large(_) => None,
        }
    }

    /// Entries in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        match self {
            SmallMap::Small(v) => Iter::Small(v.iter()),
            SmallMap::Large(m) => Iter::Large(m.iter()),
        }
    }

    /// Entries in key order, values mutable.
    pub fn iter_mut(&mut self) -> IterMut<'_, K, V> {
        match self {
            SmallMap::Small(v) => IterMut::Small(v.iter_mut()),
            SmallMap::Large(m) => IterMut::Large(m.iter_mut()),
        }
    }

    /// Keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    fn maybe_spill(&mut self) {
        if let SmallMap::Small(v) = self
            && v.len() > SPILL
        {
            self.spill();
        }
    }

    fn spill(&mut self) {
        if let SmallMap::Small(v) = self {
            let m: BTreeMap<K, V> = std::mem::take(v).into_iter().collect();
            *self = SmallMap::Large(m);
        }
    }

    /// Moves a shrunk `BTreeMap` back into a `Vec`; gives back a `Vec`'s spare room.
    fn after_remove(&mut self) {
        match self {
            SmallMap::Large(m) if m.len() < UNSPILL => {
                let v: Vec<(K, V)> = std::mem::take(m).into_iter().collect();
                *self = SmallMap::Small(v);
            }
            SmallMap::Small(v) => shrink_spare(v),
            SmallMap::Large(_) => {}
        }
    }
}

/// Iterator over a [`SmallMap`]'s entries in key order.
pub(crate) enum Iter<'a, K, V> {
    Small(std::slice::Iter<'a, (K, V)>),
    Large(btree_map::Iter<'a, K, V>),
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next().map(|(k, v)| (k, v)),
            Iter::Large(i) => i.next(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Small(i) => i.size_hint(),
            Iter::Large(i) => i.size_hint(),
        }
    }
}

impl<K, V> DoubleEndedIterator for Iter<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next_back().map(|(k, v)| (k, v)),
            Iter::Large(i) => i.next_back(),
        }
    }
}

/// Iterator over a [`SmallMap`]'s entries in key order, values mutable.
pub(crate) enum IterMut<'a, K, V> {
    Small(std::slice::IterMut<'a, (K, V)>),
    Large(btree_map::IterMut<'a, K, V>),
}

impl<'a, K, V> Iterator for IterMut<'a, K, V> {
    type Item = (&'a K, &'a mut V);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            IterMut::Small(i) => i.next().map(|(k, v)| (&*k, v)),
            IterMut::Large(i) => i.next(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            IterMut::Small(i) => i.size_hint(),
            IterMut::Large(i) => i.size_hint(),
        }
    }
}

impl<K, V> DoubleEndedIterator for IterMut<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            IterMut::Small(i) => i.next_back().map(|(k, v)| (&*k, v)),
            IterMut::Large(i) => i.next_back(),
        }
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a SmallMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a mut SmallMap<K, V> {
    type Item = (&'a K, &'a mut V);
    type IntoIter = IterMut<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_btreemap_across_spilling_and_shrinking() {
        let mut a: SmallMap<u32, u32> = SmallMap::new();
        let mut b: BTreeMap<u32, u32> = BTreeMap::new();
        let mut x: u32 = 1;
        for step in 0..5_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let key = (x >> 16) % if step < 2_500 { 80 } else { 12 };
            match x % 5 {
                0 | 1 => assert_eq!(a.insert(key, step), b.insert(key, step)),
                2 => assert_eq!(a.remove(&key), b.remove(&key)),
                3 => {
                    *a.get_or_default(key) += 1;
                    *b.entry(key).or_default() += 1;
                }
                _ => assert_eq!(a.pop_first(), b.pop_first()),
            }
            assert_eq!(a.len(), b.len());
            assert_eq!(a.get(&key), b.get(&key));
            assert!(a.iter().eq(b.iter()));
        }
    }
}
