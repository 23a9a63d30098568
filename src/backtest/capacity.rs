//! Pods and nodes: how replicas the HPA asks for become ready capacity.
//!
//! A new pod is placed on a node with a free slot at once and becomes ready after
//! the pod start-up delay. With a node pool, pods that do not fit stay pending; the
//! cluster-autoscaler model then orders enough nodes for them (minus the room of
//! nodes already on the way), each ready after the provisioning delay, and removes
//! nodes that have been unneeded for the unneeded time. Packing is by count (a node
//! holds `pods_per_node` pods), i.e. the autoscaler is assumed to consolidate well.
//!
//! On scale-down pods go in the ReplicaSet's order: pending first, then the
//! youngest still starting, then ready ones.

use std::collections::VecDeque;

/// A node pool, as the cluster-autoscaler sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodePool {
    /// How many of the workload's pods fit on one node; positive.
    pub pods_per_node: u32,
    /// From ordering a node to the node being ready, in milliseconds.
    pub provisioning_ms: i64,
    /// How long a node must be unneeded before it is removed (the autoscaler's
    /// `--scale-down-unneeded-time`, 10 min by default), in milliseconds.
    pub unneeded_ms: i64,
}

/// How capacity arrives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacitySpec {
    /// From a pod being placed to it being ready, in milliseconds.
    pub pod_startup_ms: i64,
    /// The node pool; `None` means nodes are never the constraint.
    pub pool: Option<NodePool>,
}

/// Pods and nodes of one workload at one moment.
#[derive(Debug, Clone)]
pub struct Cluster {
    spec: CapacitySpec,
    /// Pods created but not placed (waiting for a node).
    pending: u32,
    /// Ready times of placed pods still starting, ascending.
    starting: VecDeque<i64>,
    ready: u32,
    nodes_ready: u32,
    /// Ready times of nodes being provisioned, ascending.
    nodes_coming: VecDeque<i64>,
    /// `surplus_since[k]`: since when at least `k + 1` ready nodes have been unneeded.
    surplus_since: Vec<i64>,
}

impl Cluster {
    /// A cluster in steady state: `replicas` ready pods on just enough nodes.
    pub fn new(spec: CapacitySpec, replicas: u32) -> Self {
        let nodes_ready = spec
            .pool
            .map_or(0, |p| replicas.div_ceil(p.pods_per_node.max(1)));
        Self {
            spec,
            pending: 0,
            starting: VecDeque::new(),
            ready: replicas,
            nodes_ready,
            nodes_coming: VecDeque::new(),
            surplus_since: Vec::new(),
        }
    }

    /// Pods that exist (the scale target's replica count).
    pub fn pods(&self) -> u32 {
        self.pending + self.placed()
    }

    /// Pods placed on a node (starting or ready): what consumes resources.
    pub fn placed(&self) -> u32 {
        self.starting.len() as u32 + self.ready
    }

    /// Ready pods: the capacity that serves demand.
    pub fn ready(&self) -> u32 {
        self.ready
    }

    /// Pods waiting for a node.
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Nodes that cost money: ready ones and those being provisioned.
    pub fn nodes(&self) -> u32 {
        self.nodes_ready + self.nodes_coming.len() as u32
    }

    /// The next time something changes on its own, if anything is under way.
    pub fn next_event(&self) -> Option<i64> {
        let removal = self.spec.pool.and_then(|p| {
            self.surplus_since
                .first()
                .map(|since| since.saturating_add(p.unneeded_ms))
        });
        [
            self.starting.front().copied(),
            self.nodes_coming.front().copied(),
            removal,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Sets the replica count at `now_ms`.
    pub fn scale_to(&mut self, now_ms: i64, replicas: u32) {
        self.advance_to(now_ms);
        let pods = self.pods();
        if replicas > pods {
            self.pending += replicas - pods;
        } else {
            let mut remove = pods - replicas;
            let from_pending = remove.min(self.pending);
            self.pending -= from_pending;
            remove -= from_pending;
            while remove > 0 && self.starting.pop_back().is_some() {
                remove -= 1;
            }
            self.ready -= remove.min(self.ready);
        }
        self.settle(now_ms);
    }

    /// Applies everything due at or before `now_ms`, in order.
    pub fn advance_to(&mut self, now_ms: i64) {
        while let Some(t) = self.next_event().filter(|&t| t <= now_ms) {
            while self.starting.front().is_some_and(|&r| r <= t) {
                self.starting.pop_front();
                self.ready += 1;
            }
            while self.nodes_coming.front().is_some_and(|&r| r <= t) {
                self.nodes_coming.pop_front();
                self.nodes_ready += 1;
            }
            if let Some(pool) = self.spec.pool {
                let gone = self
                    .surplus_since
                    .iter()
                    .take_while(|&&s| s.saturating_add(pool.unneeded_ms) <= t)
                    .count();
                self.surplus_since.drain(..gone);
                self.nodes_ready -= gone as u32;
            }
            self.settle(t);
        }
    }

    /// Places pending pods, orders nodes for those that do not fit and tracks
    /// unneeded nodes.
    fn settle(&mut self, now_ms: i64) {
        let Some(pool) = self.spec.pool else {
            for _ in 0..self.pending {
                self.starting.push_back(now_ms + self.spec.pod_startup_ms);
            }
            self.pending = 0;
            return;
        };
        let per_node = pool.pods_per_node.max(1);
        let free = (self.nodes_ready * per_node).saturating_sub(self.placed());
        let place = free.min(self.pending);
        for _ in 0..place {
            self.starting.push_back(now_ms + self.spec.pod_startup_ms);
        }
        self.pending -= place;
        let coming_room = self.nodes_coming.len() as u32 * per_node;
        let short = self.pending.saturating_sub(coming_room);
        for _ in 0..short.div_ceil(per_node) {
            self.nodes_coming.push_back(now_ms + pool.provisioning_ms);
        }
        let needed = self.placed().div_ceil(per_node);
        let surplus = self.nodes_ready.saturating_sub(needed) as usize;
        if surplus < self.surplus_since.len() {
            self.surplus_since.truncate(surplus);
        }
        while self.surplus_since.len() < surplus {
            self.surplus_since.push(now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> CapacitySpec {
        CapacitySpec {
            pod_startup_ms: 30_000,
            pool: Some(NodePool {
                pods_per_node: 4,
                provisioning_ms: 180_000,
                unneeded_ms: 600_000,
            }),
        }
    }

    #[test]
    fn pods_become_ready_after_start_up() {
        let mut c = Cluster::new(
            CapacitySpec {
                pod_startup_ms: 30_000,
                pool: None,
            },
            2,
        );
        c.scale_to(0, 5);
        assert_eq!((c.ready(), c.pods(), c.placed()), (2, 5, 5));
        assert_eq!(c.next_event(), Some(30_000));
        c.advance_to(29_999);
        assert_eq!(c.ready(), 2);
        c.advance_to(30_000);
        assert_eq!(c.ready(), 5);
        assert_eq!(c.next_event(), None);
    }

    #[test]
    fn pods_that_do_not_fit_wait_for_new_nodes() {
        let mut c = Cluster::new(pool(), 4);
        assert_eq!(c.nodes(), 1);
        c.scale_to(0, 10);
        // 6 pending pods need 2 more nodes.
        assert_eq!((c.pending(), c.nodes()), (6, 3));
        c.advance_to(179_999);
        assert_eq!((c.ready(), c.pending()), (4, 6));
        c.advance_to(180_000);
        assert_eq!(c.pending(), 0);
        c.advance_to(209_999);
        assert_eq!(c.ready(), 4);
        c.advance_to(210_000);
        assert_eq!(c.ready(), 10);
    }

    #[test]
    fn nodes_on_the_way_are_not_ordered_twice() {
        let mut c = Cluster::new(pool(), 4);
        c.scale_to(0, 6);
        assert_eq!(c.nodes(), 2);
        c.scale_to(15_000, 8);
        assert_eq!(c.nodes(), 2, "the coming node has room for 4");
        c.scale_to(30_000, 9);
        assert_eq!(c.nodes(), 3);
    }

    #[test]
    fn unneeded_nodes_go_after_the_unneeded_time() {
        let mut c = Cluster::new(pool(), 12);
        assert_eq!(c.nodes(), 3);
        c.scale_to(0, 4);
        assert_eq!(c.next_event(), Some(600_000));
        c.advance_to(300_000);
        // Needed again for a while: the timer of that node restarts.
        c.scale_to(300_000, 8);
        c.scale_to(400_000, 4);
        c.advance_to(600_000);
        assert_eq!(c.nodes(), 2);
        c.advance_to(999_999);
        assert_eq!(c.nodes(), 2);
        c.advance_to(1_000_000);
        assert_eq!(c.nodes(), 1);
        assert_eq!(c.ready(), 4);
    }

    #[test]
    fn scale_down_removes_pending_then_starting_then_ready() {
        let mut c = Cluster::new(pool(), 4);
        c.scale_to(0, 6); // 2 pending
        c.scale_to(1_000, 3);
        assert_eq!((c.pending(), c.ready(), c.pods()), (0, 3, 3));
    }
}
