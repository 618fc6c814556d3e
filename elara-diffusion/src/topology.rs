//! The diffusion graph: [`PropagationTopology`], with interest aggregation.
//!
//! Three shapes:
//!
//! * **star** ([`PropagationTopology::star`]): the root sends to every node directly;
//! * **capacity-aware tree** ([`PropagationTopology::tree`]): every node relays to at most
//!   `min(capacity, fanout)` children. A joining node takes the shallowest free slot (ties go to
//!   the parent with more capacity), so the tree grows breadth-first and its depth stays within
//!   ⌈log_k N⌉ + 1 when relays offer the full fanout k. A joining node with more capacity than
//!   the weakest leaf at or above that depth takes the leaf's place and adopts it, so
//!   higher-capacity nodes sit nearer the root and a leaf that cannot relay never blocks a
//!   slot near the root. A join costs O(log N) (two ordered-set operations plus the interest
//!   aggregation walk, see below);
//! * **mesh** ([`PropagationTopology::mesh`]): every node sends its own updates to every other
//!   node; for small groups (at most [`MAX_MESH`] nodes).
//!
//! # Interest aggregation
//!
//! A relay's *effective* interest in a state is the strongest interest anywhere in its subtree
//! (its own included). For every (node, state) the topology keeps the node's own level, its
//! effective level and how many of its children have each effective level. When a node's own
//! level changes, or a subtree moves, the walk goes up the tree only while the effective level
//! changes, so an update costs O(1) typically and O(depth) at worst. The scheduler reads
//! [`PropagationTopology::targets`]: the children of a node whose subtree wants the state.
//!
//! # Bad input
//!
//! * An interest for a node not in the topology: [`TopologyError::UnknownNode`], nothing changes.
//! * Adding a node twice: [`TopologyError::DuplicateNode`].
//! * Removing an absent node returns `Ok(false)`; removing the root is refused with
//!   [`TopologyError::Root`].
//! * A tree with fanout 0: [`TopologyError::ZeroFanout`]. A join when no relay has a free slot
//!   and no leaf can be displaced: [`TopologyError::NoCapacity`], nothing changes.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use elara_core::{InterestLevel, NodeId, StateId};

use crate::hash::IdHashBuilder;

/// The most nodes a mesh may hold (every node sends to every other one).
pub const MAX_MESH: usize = 64;

const NONE: u32 = u32::MAX;

/// Why a topology operation was refused. The topology is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The node is not in the topology.
    #[error("node {0} is not in the topology")]
    UnknownNode(NodeId),
    /// The node is already in the topology.
    #[error("node {0} is already in the topology")]
    DuplicateNode(NodeId),
    /// The root cannot be removed (the topology would have no source).
    #[error("the root cannot be removed")]
    Root,
    /// A tree needs a fanout of at least 1.
    #[error("a tree needs a fanout of at least 1")]
    ZeroFanout,
    /// No relay has a free slot and no leaf can be displaced.
    #[error("no relay has a free slot for {0}")]
    NoCapacity(NodeId),
    /// The mesh already holds [`MAX_MESH`] nodes.
    #[error("a mesh holds at most {MAX_MESH} nodes")]
    MeshFull,
}

/// The shape of a [`PropagationTopology`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The root sends to everyone.
    Star,
    /// A relay tree in which every node feeds at most `fanout` children.
    Tree {
        /// The most children per node.
        fanout: u32,
    },
    /// Everyone sends to everyone.
    Mesh,
}

#[derive(Debug, Clone)]
struct Node {
    id: NodeId,
    parent: u32,
    children: Vec<u32>,
    depth: u32,
    /// Children this node can feed.
    slots: u32,
    alive: bool,
}

#[derive(Debug, Clone)]
struct StateAgg {
    own: Vec<u8>,
    eff: Vec<u8>,
    /// Children per effective level Low..=Critical (index level-1).
    child_counts: Vec<[u32; 4]>,
}

/// The diffusion graph of one swarm: who relays to whom, and who wants what below each relay.
///
/// ```
/// use elara_core::{InterestLevel, NodeId, StateId};
/// use elara_diffusion::PropagationTopology;
///
/// let root = NodeId::from_u64(0);
/// let mut tree = PropagationTopology::tree(root, 2).unwrap();
/// for i in 1..=6 {
///     tree.add_node(NodeId::from_u64(i), 2).unwrap();
/// }
/// assert_eq!(tree.max_depth(), 2);
/// let video = StateId(1);
/// tree.set_interest(NodeId::from_u64(6), video, InterestLevel::High).unwrap();
/// // Exactly one child of the root has node 6 in its subtree.
/// let targets: Vec<_> = tree.targets(root, video).collect();
/// assert_eq!(targets.len(), 1);
/// assert_eq!(targets[0].1, InterestLevel::High);
/// ```
#[derive(Debug, Clone)]
pub struct PropagationTopology {
    shape: Shape,
    nodes: Vec<Node>,
    index: HashMap<NodeId, u32, IdHashBuilder>,
    free: Vec<u32>,
    root: u32,
    /// Nodes with a free child slot: (depth, more slots first, index).
    open: BTreeSet<(u32, Reverse<u32>, u32)>,
    /// Non-root nodes without children: (slots, depth, index).
    leaves: BTreeSet<(u32, u32, u32)>,
    /// Nodes per depth, for [`PropagationTopology::max_depth`].
    depth_counts: Vec<u32>,
    states: Vec<StateAgg>,
    state_slots: HashMap<StateId, u32, IdHashBuilder>,
    len: usize,
}

impl PropagationTopology {
    fn empty(shape: Shape) -> Self {
        PropagationTopology {
            shape,
            nodes: Vec::new(),
            index: HashMap::with_hasher(IdHashBuilder::new(0)),
            free: Vec::new(),
            root: NONE,
            open: BTreeSet::new(),
            leaves: BTreeSet::new(),
            depth_counts: Vec::new(),
            states: Vec::new(),
            state_slots: HashMap::with_hasher(IdHashBuilder::new(0)),
            len: 0,
        }
    }

    /// A star around `root`: every added node is the root's child.
    pub fn star(root: NodeId) -> Self {
        let mut t = Self::empty(Shape::Star);
        t.root = t.insert_node(root, u32::MAX, NONE, 0);
        t.open.insert((0, Reverse(u32::MAX), t.root));
        t
    }

    /// A capacity-aware, breadth-balanced relay tree under `root`, which feeds up to `fanout`
    /// children (like every node offering at least that much capacity).
    pub fn tree(root: NodeId, fanout: u32) -> Result<Self, TopologyError> {
        if fanout == 0 {
            return Err(TopologyError::ZeroFanout);
        }
        let mut t = Self::empty(Shape::Tree { fanout });
        t.root = t.insert_node(root, fanout, NONE, 0);
        t.open.insert((0, Reverse(fanout), t.root));
        Ok(t)
    }

    /// Builds a tree from `(node, capacity)` pairs, strongest relays first, so that capacity
    /// decreases with depth exactly.
    pub fn tree_from(
        root: NodeId,
        fanout: u32,
        nodes: impl IntoIterator<Item = (NodeId, u32)>,
    ) -> Result<Self, TopologyError> {
        let mut t = Self::tree(root, fanout)?;
        let mut list: Vec<(NodeId, u32)> = nodes.into_iter().collect();
        list.sort_by_key(|&(id, cap)| (Reverse(cap.min(fanout)), id));
        t.nodes.reserve(list.len());
        for (id, cap) in list {
            t.add_node(id, cap)?;
        }
        Ok(t)
    }

    /// An empty mesh for a small group.
    pub fn mesh() -> Self {
        Self::empty(Shape::Mesh)
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Number of nodes, root included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the topology holds no node.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when `node` is in the topology.
    pub fn contains(&self, node: NodeId) -> bool {
        self.index.contains_key(&node)
    }

    /// The root (the source), for a star or a tree.
    pub fn root(&self) -> Option<NodeId> {
        (self.root != NONE).then(|| self.nodes[self.root as usize].id)
    }

    fn idx(&self, node: NodeId) -> Result<u32, TopologyError> {
        self.index
            .get(&node)
            .copied()
            .ok_or(TopologyError::UnknownNode(node))
    }

    fn insert_node(&mut self, id: NodeId, slots: u32, parent: u32, depth: u32) -> u32 {
        let node = Node {
            id,
            parent,
            children: Vec::new(),
            depth,
            slots,
            alive: true,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                for s in &mut self.states {
                    s.own.push(0);
                    s.eff.push(0);
                    s.child_counts.push([0; 4]);
                }
                (self.nodes.len() - 1) as u32
            }
        };
        for s in &mut self.states {
            s.own[idx as usize] = 0;
            s.eff[idx as usize] = 0;
            s.child_counts[idx as usize] = [0; 4];
        }
        self.index.insert(id, idx);
        self.count_depth(depth, 1);
        self.len += 1;
        idx
    }

    fn count_depth(&mut self, depth: u32, delta: i32) {
        let d = depth as usize;
        if self.depth_counts.len() <= d {
            self.depth_counts.resize(d + 1, 0);
        }
        self.depth_counts[d] = self.depth_counts[d].wrapping_add_signed(delta);
    }

    /// Adds `node`, which can feed up to `capacity` children (capped at the fanout; ignored in
    /// a star, where only the root sends, and in a mesh). Returns its parent (`None` in a mesh).
    pub fn add_node(
        &mut self,
        node: NodeId,
        capacity: u32,
    ) -> Result<Option<NodeId>, TopologyError> {
        if self.index.contains_key(&node) {
            return Err(TopologyError::DuplicateNode(node));
        }
        match self.shape {
            Shape::Mesh => {
                if self.len >= MAX_MESH {
                    return Err(TopologyError::MeshFull);
                }
                self.insert_node(node, 0, NONE, 0);
                Ok(None)
            }
            Shape::Star => {
                let idx = self.insert_node(node, 0, self.root, 1);
                self.link_child(self.root, idx);
                Ok(Some(self.nodes[self.root as usize].id))
            }
            Shape::Tree { fanout } => {
                let slots = capacity.min(fanout);
                let parent = self.open.first().copied();
                let weakest = self.leaves.first().copied();
                if let Some((lslots, ldepth, leaf)) = weakest
                    && lslots < slots
                    && parent.is_none_or(|(pdepth, _, _)| ldepth <= pdepth)
                {
                    // Take the weak leaf's place and adopt it.
                    let lparent = self.nodes[leaf as usize].parent;
                    self.unlink_child(lparent, leaf);
                    let idx = self.insert_node(node, slots, lparent, ldepth);
                    self.link_child(lparent, idx);
                    self.set_depth(leaf, ldepth + 1);
                    self.link_child(idx, leaf);
                    return Ok(Some(self.nodes[lparent as usize].id));
                }
                let Some((pdepth, _, p)) = parent else {
                    return Err(TopologyError::NoCapacity(node));
                };
                let idx = self.insert_node(node, slots, p, pdepth + 1);
                self.link_child(p, idx);
                Ok(Some(self.nodes[p as usize].id))
            }
        }
    }

    /// Changes the recorded depth of a detached-or-leaf node and its index entries.
    fn set_depth(&mut self, i: u32, depth: u32) {
        let n = &self.nodes[i as usize];
        let (old, slots, free, leaf) = (
            n.depth,
            n.slots,
            n.slots as usize > n.children.len(),
            n.children.is_empty() && i != self.root,
        );
        if old == depth {
            return;
        }
        if free {
            self.open.remove(&(old, Reverse(slots), i));
            self.open.insert((depth, Reverse(slots), i));
        }
        if leaf {
            self.leaves.remove(&(slots, old, i));
            self.leaves.insert((slots, depth, i));
        }
        self.count_depth(old, -1);
        self.count_depth(depth, 1);
        self.nodes[i as usize].depth = depth;
    }

    /// Removes the bookkeeping entries (open, leaves) of node `i` as it is now.
    fn unindex(&mut self, i: u32) {
        let n = &self.nodes[i as usize];
        let key_open = (n.depth, Reverse(n.slots), i);
        let key_leaf = (n.slots, n.depth, i);
        self.open.remove(&key_open);
        self.leaves.remove(&key_leaf);
    }

    /// Adds the bookkeeping entries (open, leaves) of node `i` as it is now.
    fn reindex(&mut self, i: u32) {
        let n = &self.nodes[i as usize];
        if (n.slots as usize) > n.children.len() {
            self.open.insert((n.depth, Reverse(n.slots), i));
        }
        if n.children.is_empty() && i != self.root {
            self.leaves.insert((n.slots, n.depth, i));
        }
    }

    /// Makes `c` a child of `p` (depth of `c` already set) and adds `c`'s effective interests
    /// to `p`'s aggregates.
    fn link_child(&mut self, p: u32, c: u32) {
        self.unindex(p);
        self.nodes[p as usize].children.push(c);
        self.nodes[c as usize].parent = p;
        self.reindex(p);
        self.unindex(c);
        self.reindex(c);
        for s in 0..self.states.len() {
            let e = self.states[s].eff[c as usize];
            if e > 0 {
                self.adjust(s, p, e, 1);
            }
        }
    }

    /// Detaches `c` from its parent `p`, removing `c`'s effective interests from `p`'s chain.
    fn unlink_child(&mut self, p: u32, c: u32) {
        for s in 0..self.states.len() {
            let e = self.states[s].eff[c as usize];
            if e > 0 {
                self.adjust(s, p, e, -1);
            }
        }
        self.unindex(p);
        let ch = &mut self.nodes[p as usize].children;
        if let Some(pos) = ch.iter().position(|&x| x == c) {
            ch.swap_remove(pos);
        }
        self.nodes[c as usize].parent = NONE;
        self.reindex(p);
    }

    /// `p` gains (`delta = 1`) or loses (`-1`) a child whose effective level is `level`; walks
    /// up while effective levels change.
    fn adjust(&mut self, s: usize, mut p: u32, mut level: u8, mut delta: i32) {
        let mut second: Option<(u8, i32)> = None;
        loop {
            let agg = &mut self.states[s];
            let c = &mut agg.child_counts[p as usize][level as usize - 1];
            *c = c.wrapping_add_signed(delta);
            if let Some((l2, d2)) = second.take() {
                let c = &mut agg.child_counts[p as usize][l2 as usize - 1];
                *c = c.wrapping_add_signed(d2);
            }
            let old = agg.eff[p as usize];
            let new = effective(agg, p);
            if old == new {
                return;
            }
            agg.eff[p as usize] = new;
            let parent = self.nodes[p as usize].parent;
            if parent == NONE {
                return;
            }
            // At the parent: one child moved from `old` to `new`.
            p = parent;
            match (old, new) {
                (0, n) => {
                    level = n;
                    delta = 1;
                }
                (o, 0) => {
                    level = o;
                    delta = -1;
                }
                (o, n) => {
                    level = o;
                    delta = -1;
                    second = Some((n, 1));
                }
            }
        }
    }

    fn state_slot_or_insert(&mut self, state: StateId) -> usize {
        if let Some(&s) = self.state_slots.get(&state) {
            return s as usize;
        }
        let n = self.nodes.len();
        self.states.push(StateAgg {
            own: vec![0; n],
            eff: vec![0; n],
            child_counts: vec![[0; 4]; n],
        });
        let s = self.states.len() - 1;
        self.state_slots.insert(state, s as u32);
        s
    }

    /// Sets `node`'s own interest in `state`; returns its previous own level. Effective
    /// interests of its ancestors are updated incrementally.
    pub fn set_interest(
        &mut self,
        node: NodeId,
        state: StateId,
        level: InterestLevel,
    ) -> Result<InterestLevel, TopologyError> {
        let i = self.idx(node)?;
        let s = self.state_slot_or_insert(state);
        let agg = &mut self.states[s];
        let prev = agg.own[i as usize];
        agg.own[i as usize] = level.as_u8();
        let old = agg.eff[i as usize];
        let new = effective(agg, i);
        if old != new {
            agg.eff[i as usize] = new;
            let p = self.nodes[i as usize].parent;
            if p != NONE && self.shape != Shape::Mesh {
                if old > 0 {
                    self.adjust(s, p, old, -1);
                }
                if new > 0 {
                    self.adjust(s, p, new, 1);
                }
            }
        }
        Ok(InterestLevel::from_u8(prev).unwrap_or(InterestLevel::None))
    }

    /// `node`'s own interest in `state`.
    pub fn own_interest(&self, node: NodeId, state: StateId) -> InterestLevel {
        self.level_of(node, state, |a| &a.own)
    }

    /// `node`'s effective interest in `state`: the strongest in its subtree (its own in a mesh).
    pub fn effective_interest(&self, node: NodeId, state: StateId) -> InterestLevel {
        self.level_of(node, state, |a| &a.eff)
    }

    fn level_of(
        &self,
        node: NodeId,
        state: StateId,
        f: impl Fn(&StateAgg) -> &Vec<u8>,
    ) -> InterestLevel {
        match (self.index.get(&node), self.state_slots.get(&state)) {
            (Some(&i), Some(&s)) => InterestLevel::from_u8(f(&self.states[s as usize])[i as usize])
                .unwrap_or(InterestLevel::None),
            _ => InterestLevel::None,
        }
    }

    /// Removes `node`. Its children are re-attached: the strongest child takes its place, the
    /// others take the shallowest free slots (outside their own subtrees). Returns `Ok(false)`
    /// when the node was absent. Cost: O(size of the moved subtrees × log N).
    pub fn remove_node(&mut self, node: NodeId) -> Result<bool, TopologyError> {
        let Some(&i) = self.index.get(&node) else {
            return Ok(false);
        };
        if i == self.root {
            return Err(TopologyError::Root);
        }
        // Withdraw the node's own interests so aggregates above it are right.
        for s in 0..self.states.len() {
            if self.states[s].own[i as usize] != 0 {
                self.states[s].own[i as usize] = 0;
                let old = self.states[s].eff[i as usize];
                let new = effective(&self.states[s], i);
                self.states[s].eff[i as usize] = new;
                let p = self.nodes[i as usize].parent;
                if p != NONE && self.shape != Shape::Mesh && old != new {
                    if old > 0 {
                        self.adjust(s, p, old, -1);
                    }
                    if new > 0 {
                        self.adjust(s, p, new, 1);
                    }
                }
            }
        }
        let parent = self.nodes[i as usize].parent;
        let depth = self.nodes[i as usize].depth;
        let mut children = std::mem::take(&mut self.nodes[i as usize].children);
        // Detach children first (their subtrees leave i's aggregates), then i itself.
        for &c in &children {
            for s in 0..self.states.len() {
                let e = self.states[s].eff[c as usize];
                if e > 0 {
                    self.adjust(s, i, e, -1);
                }
            }
            self.nodes[c as usize].parent = NONE;
        }
        if parent != NONE {
            self.unlink_child(parent, i);
        }
        self.unindex(i);
        self.count_depth(depth, -1);
        self.nodes[i as usize].alive = false;
        self.index.remove(&node);
        self.free.push(i);
        self.len -= 1;
        if children.is_empty() || self.shape == Shape::Mesh {
            return Ok(true);
        }
        // Strongest child first: it takes the freed slot.
        children.sort_by_key(|&c| (Reverse(self.nodes[c as usize].slots), c));
        // Take every moving subtree out of the free-slot and leaf indexes.
        let mut stack = children.clone();
        while let Some(x) = stack.pop() {
            self.unindex(x);
            stack.extend(self.nodes[x as usize].children.iter().copied());
        }
        for (k, &c) in children.iter().enumerate() {
            let (p, d) = if k == 0 && parent != NONE {
                (parent, depth)
            } else {
                match self.open.first() {
                    Some(&(pd, _, p)) => (p, pd + 1),
                    // Nowhere with room: the root takes the orphan over its capacity.
                    None => (self.root, 1),
                }
            };
            self.move_subtree_depth(c, d);
            self.link_child(p, c);
            let mut stack = vec![c];
            while let Some(x) = stack.pop() {
                self.reindex(x);
                stack.extend(self.nodes[x as usize].children.iter().copied());
            }
        }
        Ok(true)
    }

    /// Sets the depth of the (unindexed) subtree at `c` so that `c` sits at `depth`.
    fn move_subtree_depth(&mut self, c: u32, depth: u32) {
        let mut stack = vec![(c, depth)];
        while let Some((x, d)) = stack.pop() {
            let old = self.nodes[x as usize].depth;
            if old != d {
                self.count_depth(old, -1);
                self.count_depth(d, 1);
                self.nodes[x as usize].depth = d;
            }
            for &ch in &self.nodes[x as usize].children {
                stack.push((ch, d + 1));
            }
        }
    }

    /// The deepest node's depth (root = 0).
    pub fn max_depth(&self) -> u32 {
        self.depth_counts
            .iter()
            .rposition(|&c| c > 0)
            .map_or(0, |d| d as u32)
    }

    /// `node`'s depth (root = 0; 0 for every node of a mesh).
    pub fn depth(&self, node: NodeId) -> Option<u32> {
        self.index.get(&node).map(|&i| self.nodes[i as usize].depth)
    }

    /// `node`'s parent (`None` for the root, in a mesh, or for an unknown node).
    pub fn parent(&self, node: NodeId) -> Option<NodeId> {
        let &i = self.index.get(&node)?;
        let p = self.nodes[i as usize].parent;
        (p != NONE).then(|| self.nodes[p as usize].id)
    }

    /// `node`'s children in the tree or star (empty for a leaf, a mesh or an unknown node).
    pub fn children(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        let ch: &[u32] = match self.index.get(&node) {
            Some(&i) => &self.nodes[i as usize].children,
            None => &[],
        };
        ch.iter().map(|&c| self.nodes[c as usize].id)
    }

    /// The direct neighbours of `from` that should receive updates of `state`, with their
    /// effective interest: the children whose subtree wants it (in a mesh: every other node that
    /// wants it). Allocates nothing.
    pub fn targets(&self, from: NodeId, state: StateId) -> Targets<'_> {
        let agg = self
            .state_slots
            .get(&state)
            .map(|&s| &self.states[s as usize]);
        let (list, mesh_all): (&[u32], bool) = match (self.index.get(&from), self.shape) {
            (Some(_), Shape::Mesh) => (&[], true),
            (Some(&i), _) => (&self.nodes[i as usize].children, false),
            (None, _) => (&[], false),
        };
        Targets {
            topo: self,
            agg,
            list,
            mesh_all,
            from,
            pos: 0,
        }
    }

    /// Checks every structural and aggregation invariant (for tests and debugging); returns a
    /// description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.alive {
                continue;
            }
            seen += 1;
            let i = i as u32;
            if self.shape != Shape::Mesh && i != self.root {
                let p = n.parent;
                if p == NONE || !self.nodes[p as usize].children.contains(&i) {
                    return Err(format!("{} is not its parent's child", n.id));
                }
                if self.nodes[p as usize].depth + 1 != n.depth {
                    return Err(format!("{} has a wrong depth", n.id));
                }
            }
            for (s, agg) in self.states.iter().enumerate() {
                let mut counts = [0u32; 4];
                let mut max = agg.own[i as usize];
                for &c in &n.children {
                    let e = agg.eff[c as usize];
                    if e > 0 {
                        counts[e as usize - 1] += 1;
                    }
                    max = max.max(e);
                }
                if self.shape != Shape::Mesh && counts != agg.child_counts[i as usize] {
                    return Err(format!("{} child counts wrong for state slot {s}", n.id));
                }
                if agg.eff[i as usize] != max {
                    return Err(format!("{} effective interest wrong for slot {s}", n.id));
                }
            }
        }
        if seen != self.len {
            return Err("length mismatch".into());
        }
        Ok(())
    }
}

fn effective(agg: &StateAgg, i: u32) -> u8 {
    let own = agg.own[i as usize];
    let counts = &agg.child_counts[i as usize];
    let child = (0..4)
        .rev()
        .find(|&l| counts[l] > 0)
        .map_or(0, |l| l as u8 + 1);
    own.max(child)
}

/// Iterator from [`PropagationTopology::targets`].
pub struct Targets<'a> {
    topo: &'a PropagationTopology,
    agg: Option<&'a StateAgg>,
    list: &'a [u32],
    mesh_all: bool,
    from: NodeId,
    pos: usize,
}

impl Iterator for Targets<'_> {
    type Item = (NodeId, InterestLevel);

    fn next(&mut self) -> Option<Self::Item> {
        let agg = self.agg?;
        if self.mesh_all {
            while self.pos < self.topo.nodes.len() {
                let i = self.pos;
                self.pos += 1;
                let n = &self.topo.nodes[i];
                if n.alive && n.id != self.from && agg.own[i] > 0 {
                    return Some((n.id, InterestLevel::from_u8(agg.own[i])?));
                }
            }
            return None;
        }
        while self.pos < self.list.len() {
            let c = self.list[self.pos] as usize;
            self.pos += 1;
            if agg.eff[c] > 0 {
                return Some((self.topo.nodes[c].id, InterestLevel::from_u8(agg.eff[c])?));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InterestLevel::{Critical, High, Low, Medium};
    const NONE_L: InterestLevel = InterestLevel::None;

    fn n(i: u64) -> NodeId {
        NodeId::from_u64(i)
    }
    const S: StateId = StateId(1);

    fn log_ceil(n: u64, k: u64) -> u32 {
        let mut d = 0;
        let mut p = 1u64;
        while p < n {
            p *= k;
            d += 1;
        }
        d
    }

    #[test]
    fn tree_is_breadth_balanced() {
        for (count, k) in [(1000u64, 2u32), (5000, 8), (777, 3), (100, 1)] {
            let mut t = PropagationTopology::tree(n(0), k).unwrap();
            for i in 1..count {
                t.add_node(n(i), k).unwrap();
            }
            let bound = if k == 1 {
                count as u32
            } else {
                log_ceil(count, k as u64) + 1
            };
            assert!(t.max_depth() <= bound, "{count} k={k}: {}", t.max_depth());
            t.check_invariants().unwrap();
        }
    }

    #[test]
    fn higher_capacity_nodes_sit_nearer_the_root() {
        let mut t = PropagationTopology::tree(n(0), 2).unwrap();
        // Two leaves that cannot relay take the root's slots first...
        t.add_node(n(1), 0).unwrap();
        t.add_node(n(2), 0).unwrap();
        // ...then relays arrive and displace them.
        t.add_node(n(3), 2).unwrap();
        t.add_node(n(4), 2).unwrap();
        assert_eq!(t.depth(n(3)), Some(1));
        assert_eq!(t.depth(n(4)), Some(1));
        assert_eq!(t.depth(n(1)), Some(2));
        assert_eq!(t.depth(n(2)), Some(2));
        t.check_invariants().unwrap();
        // Without displacement a full root and zero-capacity children would refuse joins.
        t.add_node(n(5), 0).unwrap();
        t.add_node(n(6), 0).unwrap();
        t.check_invariants().unwrap();
    }

    #[test]
    fn no_capacity_is_an_error_and_changes_nothing() {
        let mut t = PropagationTopology::tree(n(0), 1).unwrap();
        t.add_node(n(1), 0).unwrap();
        assert_eq!(t.add_node(n(2), 0), Err(TopologyError::NoCapacity(n(2))));
        assert_eq!(t.len(), 2);
        assert!(!t.contains(n(2)));
        t.check_invariants().unwrap();
    }

    #[test]
    fn bad_input() {
        assert_eq!(
            PropagationTopology::tree(n(0), 0).unwrap_err(),
            TopologyError::ZeroFanout
        );
        let mut t = PropagationTopology::star(n(0));
        assert_eq!(
            t.set_interest(n(5), S, High),
            Err(TopologyError::UnknownNode(n(5)))
        );
        assert_eq!(t.remove_node(n(5)), Ok(false));
        assert_eq!(t.remove_node(n(0)), Err(TopologyError::Root));
        t.add_node(n(1), 0).unwrap();
        assert_eq!(t.add_node(n(1), 0), Err(TopologyError::DuplicateNode(n(1))));
        let mut m = PropagationTopology::mesh();
        for i in 0..MAX_MESH as u64 {
            m.add_node(n(i), 0).unwrap();
        }
        assert_eq!(m.add_node(n(999), 0), Err(TopologyError::MeshFull));
    }

    #[test]
    fn aggregation_follows_interest_changes() {
        // Chain-like tree with fanout 1: 0 -> 1 -> 2 -> 3.
        let mut t = PropagationTopology::tree(n(0), 1).unwrap();
        for i in 1..4 {
            t.add_node(n(i), 1).unwrap();
        }
        t.set_interest(n(3), S, Low).unwrap();
        assert_eq!(t.effective_interest(n(1), S), Low);
        t.set_interest(n(2), S, High).unwrap();
        assert_eq!(t.effective_interest(n(1), S), High);
        assert_eq!(t.effective_interest(n(3), S), Low);
        t.set_interest(n(2), S, NONE_L).unwrap();
        assert_eq!(t.effective_interest(n(1), S), Low);
        assert_eq!(t.targets(n(0), S).collect::<Vec<_>>(), vec![(n(1), Low)]);
        t.set_interest(n(3), S, NONE_L).unwrap();
        assert_eq!(t.targets(n(0), S).count(), 0);
        t.check_invariants().unwrap();
    }

    #[test]
    fn star_targets_every_interested_leaf() {
        let mut t = PropagationTopology::star(n(0));
        for i in 1..=10 {
            t.add_node(n(i), 0).unwrap();
            if i % 2 == 0 {
                t.set_interest(n(i), S, Medium).unwrap();
            }
        }
        assert_eq!(t.max_depth(), 1);
        assert_eq!(t.targets(n(0), S).count(), 5);
        assert!(t.targets(n(0), S).all(|(_, l)| l == Medium));
    }

    #[test]
    fn mesh_targets_everyone_else_who_wants_it() {
        let mut t = PropagationTopology::mesh();
        for i in 0..5 {
            t.add_node(n(i), 0).unwrap();
            t.set_interest(n(i), S, High).unwrap();
        }
        let got: Vec<_> = t.targets(n(2), S).map(|x| x.0).collect();
        assert_eq!(got, vec![n(0), n(1), n(3), n(4)]);
        t.remove_node(n(3)).unwrap();
        assert_eq!(t.targets(n(2), S).count(), 3);
    }

    #[test]
    fn removing_a_relay_reattaches_its_subtree() {
        let mut t = PropagationTopology::tree(n(0), 2).unwrap();
        for i in 1..=14 {
            t.add_node(n(i), 2).unwrap();
            t.set_interest(n(i), S, if i == 14 { Critical } else { Low })
                .unwrap();
        }
        let relay = t.parent(n(14)).unwrap();
        assert!(t.remove_node(relay).unwrap());
        t.check_invariants().unwrap();
        assert_eq!(t.len(), 14);
        assert!(t.contains(n(14)));
        assert_eq!(t.effective_interest(n(0), S), Critical);
        assert!(t.max_depth() <= 4);
        // Remove more, including inner relays.
        for i in [1, 2, 5] {
            t.remove_node(n(i)).unwrap();
            t.check_invariants().unwrap();
        }
        assert_eq!(t.effective_interest(n(0), S), Critical);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any sequence of joins, leaves and interest changes keeps every invariant.
            #[test]
            fn invariants_hold(ops in proptest::collection::vec((0..4u8, 1..40u64, 0..5u8, 0..4u32), 1..150)) {
                let mut t = PropagationTopology::tree(n(0), 3).unwrap();
                for (op, id, lvl, cap) in ops {
                    match op {
                        0 | 1 => { let _ = t.add_node(n(id), cap); }
                        2 => { let _ = t.set_interest(n(id), StateId(u64::from(cap % 2)), InterestLevel::from_u8(lvl).unwrap()); }
                        _ => { let _ = t.remove_node(n(id)); }
                    }
                    prop_assert!(t.check_invariants().is_ok(), "{:?}", t.check_invariants());
                }
            }
        }
    }
}
