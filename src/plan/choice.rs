//! Expander scoring: which of the cluster-autoscaler's scale-up options to prefer.
//!
//! Prefer the options whose pool has the largest forecast shortfall at now + its
//! provisioning delay (the nodes the node-pool plan says to add now); among those,
//! the option that leaves the least cpu and memory idle on its template nodes after
//! placing the option's pending pods; then the one that adds fewer nodes. Whenever
//! the plan cannot vouch for every option (no plan, a stale plan, a node group no
//! pool claims, a pool without forecasts), abstain: the caller returns every option,
//! which leaves the choice to the cluster-autoscaler.
//!
//! Pure and synchronous; the gRPC edge (`crate::expander`) decodes the wire into
//! these plain structs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::nodepool::{pack_pods, Plan, PoolPlan, Resources};

/// A node group's template node, as the cluster-autoscaler describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateNode {
    /// The node's labels.
    pub labels: BTreeMap<String, String>,
    /// Allocatable cpu and memory (capacity where allocatable is not given).
    pub allocatable: Resources,
    /// The `pods` allocatable, when given.
    pub max_pods: Option<u32>,
    /// The node's taints, as `key=value:Effect`.
    pub taints: Vec<String>,
}

/// One scale-up option, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The node group it grows.
    pub node_group_id: String,
    /// How many nodes it adds.
    pub node_count: u32,
    /// Requests of the pending pods it would schedule.
    pub pods: Vec<Resources>,
    /// The node group's template node, when the request carried one.
    pub template: Option<TemplateNode>,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Return only these options (indices into the candidates, in input order),
    /// with `reason` in their `debug` field.
    Prefer {
        /// The preferred candidates (equal on every criterion).
        indices: Vec<usize>,
        /// Why, for the `debug` field and the log.
        reason: String,
        /// The pool of the preferred candidates (a configured pool's name).
        pool: String,
        /// That pool's forecast shortfall in nodes: 0 when no offered pool is short
        /// and the choice fell to the least waste.
        shortfall_nodes: u32,
    },
    /// Return every option unchanged.
    Abstain {
        /// Which of the reasons to abstain, as a fixed set (for metrics).
        kind: Abstention,
        /// Why the plan cannot decide, in words.
        reason: String,
    },
}

/// Why [`choose`] abstained: a fixed set, so it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Abstention {
    /// The request offered no options.
    NoOptions,
    /// No node-pool plan has been computed yet.
    NoPlan,
    /// The plan is older than allowed.
    StalePlan,
    /// An option's node group belongs to no configured pool (or to several).
    UnknownNodeGroup,
    /// An option's pool lacks a forecast for some of its workloads.
    IncompletePool,
}

impl Abstention {
    /// A short snake_case name (a metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            Abstention::NoOptions => "no_options",
            Abstention::NoPlan => "no_plan",
            Abstention::StalePlan => "stale_plan",
            Abstention::UnknownNodeGroup => "unknown_node_group",
            Abstention::IncompletePool => "incomplete_pool",
        }
    }
}

/// How old a plan may be and still decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The time of the request (unix milliseconds).
    pub now_ms: i64,
    /// Plans older than this abstain.
    pub max_age_ms: i64,
}

/// How one candidate scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The pool the candidate's node group belongs to.
    pub pool: String,
    /// The pool's forecast shortfall in nodes (its `extra_nodes`).
    pub shortfall_nodes: u32,
    /// Idle share of cpu and memory (mean of the two) on the candidate's nodes after
    /// placing its pods, in [0, 1].
    pub waste: f64,
    /// Nodes the candidate adds.
    pub node_count: u32,
}

/// Waste differences below this are ties (floating-point noise, not preference).
const WASTE_EPSILON: f64 = 1e-9;

/// Chooses among `candidates` by the node-pool `plan`; see the module doc.
pub fn choose(candidates: &[Candidate], plan: Option<&Plan>, freshness: Freshness) -> Choice {
    let abstain = |kind: Abstention, reason: String| Choice::Abstain { kind, reason };
    if candidates.is_empty() {
        return abstain(Abstention::NoOptions, "no options to choose from".into());
    }
    let Some(plan) = plan else {
        return abstain(Abstention::NoPlan, "no node-pool plan yet".into());
    };
    let age_ms = freshness.now_ms.saturating_sub(plan.computed_at_ms);
    if age_ms > freshness.max_age_ms {
        return abstain(
            Abstention::StalePlan,
            format!(
                "the node-pool plan is {}s old (limit {}s)",
                age_ms / 1000,
                freshness.max_age_ms / 1000
            ),
        );
    }

    let mut scored = Vec::with_capacity(candidates.len());
    for c in candidates {
        let labels = c.template.as_ref().map(|t| &t.labels);
        let Some(pool) = plan.pool_for_node_group(&c.node_group_id, labels) else {
            return abstain(
                Abstention::UnknownNodeGroup,
                format!(
                    "node group {:?} belongs to no configured pool (or to several by labels)",
                    c.node_group_id
                ),
            );
        };
        if !pool.is_complete() {
            return abstain(
                Abstention::IncompletePool,
                format!(
                    "pool {} has no forecast for {}",
                    pool.spec.name,
                    pool.missing_forecasts.join(", ")
                ),
            );
        }
        scored.push((score(c, pool), pool));
    }

    let best = scored
        .iter()
        .map(|(s, _)| s)
        .reduce(|a, b| if better(b, a) { b } else { a })
        .cloned();
    let Some(best) = best else {
        return abstain(Abstention::NoOptions, "no options to choose from".into());
    };
    let indices: Vec<usize> = scored
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| !better(&best, s))
        .map(|(i, _)| i)
        .collect();
    let runner_up = scored
        .iter()
        .enumerate()
        .filter(|(i, _)| !indices.contains(i))
        .map(|(_, (s, _))| s)
        .reduce(|a, b| if better(b, a) { b } else { a });
    let pool = scored
        .iter()
        .find(|(s, _)| s.pool == best.pool)
        .map(|(_, p)| *p);
    Choice::Prefer {
        reason: explain(&best, pool, runner_up, candidates.len()),
        indices,
        pool: best.pool.clone(),
        shortfall_nodes: best.shortfall_nodes,
    }
}

/// True when `a` is strictly preferred to `b`.
fn better(a: &Score, b: &Score) -> bool {
    if a.shortfall_nodes != b.shortfall_nodes {
        return a.shortfall_nodes > b.shortfall_nodes;
    }
    if (a.waste - b.waste).abs() > WASTE_EPSILON {
        return a.waste < b.waste;
    }
    a.node_count < b.node_count
}

/// Scores one candidate against its pool's plan.
pub fn score(c: &Candidate, pool: &PoolPlan) -> Score {
    // The template node describes the node group exactly; the pool's configured
    // shape is the fallback. DaemonSets run on every node either way.
    let allocatable = c
        .template
        .as_ref()
        .map_or(pool.spec.allocatable, |t| t.allocatable);
    let room = allocatable
        .checked_sub(pool.spec.daemonset_overhead)
        .unwrap_or_default();
    let slots = c
        .template
        .as_ref()
        .and_then(|t| t.max_pods)
        .unwrap_or(pool.spec.max_pods_per_node)
        .saturating_sub(pool.spec.daemonset_pods);

    let mut by_shape: BTreeMap<Resources, u32> = BTreeMap::new();
    for p in &c.pods {
        *by_shape.entry(*p).or_default() += 1;
    }
    let groups: Vec<(&str, Resources, u32)> =
        by_shape.iter().map(|(r, n)| ("pending", *r, *n)).collect();
    let packing = pack_pods(&groups, room, slots);
    let nodes = u64::from(c.node_count.max(packing.nodes).max(1));
    let total = room.saturating_mul(nodes);
    let idle = |used: u64, total: u64| {
        if total == 0 {
            1.0
        } else {
            1.0 - (used.min(total) as f64 / total as f64)
        }
    };
    let waste = 0.5
        * (idle(packing.requested.cpu_milli, total.cpu_milli)
            + idle(packing.requested.memory_bytes, total.memory_bytes));
    Score {
        pool: pool.spec.name.clone(),
        shortfall_nodes: pool.extra_nodes,
        waste,
        node_count: c.node_count,
    }
}

fn explain(
    best: &Score,
    pool: Option<&PoolPlan>,
    runner_up: Option<&Score>,
    options: usize,
) -> String {
    let mut s = format!(
        "prescale: pool {} is short {} node(s)",
        best.pool, best.shortfall_nodes
    );
    if let Some(p) = pool {
        let _ = write!(s, " at now+{}s (", p.spec.provisioning_delay_s);
        let mut first = true;
        for w in &p.workloads {
            if !first {
                s.push_str(", ");
            }
            first = false;
            if let Some(f) = w.forecast {
                let _ = write!(s, "{} forecast {:.1} -> {} replicas", w.name, f, w.replicas);
            }
        }
        if first {
            s.push_str("no workloads");
        }
        let _ = write!(
            s,
            "; needs {} node(s), has {})",
            p.nodes_needed, p.current_nodes
        );
    }
    let _ = write!(
        s,
        "; {:.1}% of cpu/memory idle after placing the pending pods on {} node(s)",
        best.waste * 100.0,
        best.node_count
    );
    match runner_up {
        Some(r) => {
            let _ = write!(
                s,
                "; next best of {options}: pool {} short {}, {:.1}% idle, {} node(s)",
                r.pool,
                r.shortfall_nodes,
                r.waste * 100.0,
                r.node_count
            );
        }
        None => {
            let _ = write!(s, "; all {options} option(s) tie");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::nodepool::{
        plan as make_plan, PoolShape, PoolSpec, PoolState, WorkloadShape, WorkloadSpec,
    };

    const GI: u64 = 1 << 30;

    fn pool(name: &str, cpu: u64, mem_gi: u64) -> PoolSpec {
        PoolSpec::try_new(PoolShape {
            name: name.into(),
            node_group_ids: vec![format!("{name}-asg")],
            node_labels: BTreeMap::from([("pool".to_string(), name.to_string())]),
            allocatable: Resources::new(cpu, mem_gi * GI),
            max_pods_per_node: 110,
            daemonset_overhead: Resources::default(),
            daemonset_pods: 0,
            provisioning_delay_s: 150,
            min_nodes: 0,
            max_nodes: 50,
        })
        .unwrap()
    }

    fn workload(name: &str, pool: &str, forecast: Option<f64>, req: Resources) -> WorkloadSpec {
        WorkloadSpec::try_new(WorkloadShape {
            name: name.into(),
            pool: pool.into(),
            target_per_replica: 1.0,
            pod_requests: req,
            min_replicas: 0,
            max_replicas: 1000,
        })
        .unwrap()
        .with_forecast(forecast)
    }

    /// app: 8 cpu / 32Gi; db: 8 cpu / 64Gi. Forecast: app needs 4 nodes (has 1,
    /// short 3), db needs 2 (has 2, short 0).
    fn seed_plan(now_ms: i64) -> Plan {
        let pools = [pool("app", 8000, 32), pool("db", 8000, 64)];
        let workloads = [
            workload("web", "app", Some(8.0), Resources::new(3500, 4 * GI)),
            workload("pg", "db", Some(2.0), Resources::new(6000, 48 * GI)),
        ];
        let state = BTreeMap::from([
            ("app".to_string(), PoolState { current_nodes: 1 }),
            ("db".to_string(), PoolState { current_nodes: 2 }),
        ]);
        make_plan(&pools, &workloads, &state, now_ms)
    }

    fn cand(id: &str, count: u32, pods: &[Resources]) -> Candidate {
        Candidate {
            node_group_id: id.into(),
            node_count: count,
            pods: pods.to_vec(),
            template: None,
        }
    }

    const FRESH: Freshness = Freshness {
        now_ms: 1000,
        max_age_ms: 60_000,
    };

    #[test]
    fn prefers_the_pool_with_the_largest_shortfall() {
        let plan = seed_plan(0);
        assert_eq!(plan.pools[0].extra_nodes, 3);
        assert_eq!(plan.pools[1].extra_nodes, 0);
        let pods = [Resources::new(1000, GI)];
        let c = [cand("db-asg", 1, &pods), cand("app-asg", 1, &pods)];
        match choose(&c, Some(&plan), FRESH) {
            Choice::Prefer {
                indices,
                reason,
                pool,
                shortfall_nodes,
            } => {
                assert_eq!(indices, vec![1]);
                assert_eq!((pool.as_str(), shortfall_nodes), ("app", 3));
                assert!(
                    reason.contains("pool app is short 3 node(s) at now+150s"),
                    "{reason}"
                );
                assert!(
                    reason.contains("web forecast 8.0 -> 8 replicas"),
                    "{reason}"
                );
                assert!(
                    reason.contains("next best of 2: pool db short 0"),
                    "{reason}"
                );
            }
            other => panic!("expected a choice, got {other:?}"),
        }
    }

    #[test]
    fn ties_on_shortfall_go_to_least_waste_then_fewer_nodes() {
        let plan = seed_plan(0);
        // Both db (shortfall 0). A 6-cpu/48Gi pod on an 8/64 node: idle (2/8 + 16/64)/2 = 25%.
        // On two nodes: idle (10/16 + 80/128)/2 = 62.5%.
        let pod = [Resources::new(6000, 48 * GI)];
        let mut big = cand("db-big", 1, &pod);
        big.template = Some(TemplateNode {
            labels: BTreeMap::from([("pool".into(), "db".into())]),
            allocatable: Resources::new(16_000, 128 * GI),
            max_pods: Some(110),
            taints: vec![],
        });
        let c = [cand("db-asg", 2, &pod), big, cand("db-asg", 1, &pod)];
        let scores: Vec<f64> = c.iter().map(|c| score(c, &plan.pools[1]).waste).collect();
        assert!((scores[0] - 0.625).abs() < 1e-12, "{scores:?}");
        assert!((scores[1] - 0.625).abs() < 1e-12, "{scores:?}");
        assert!((scores[2] - 0.25).abs() < 1e-12, "{scores:?}");
        match choose(&c, Some(&plan), FRESH) {
            Choice::Prefer {
                indices, reason, ..
            } => {
                assert_eq!(indices, vec![2]);
                assert!(reason.contains("25.0% of cpu/memory idle"), "{reason}");
            }
            other => panic!("expected a choice, got {other:?}"),
        }
        // Equal waste: fewer nodes wins (1 node of 16/128 vs 2 of 8/64).
        match choose(&c[..2], Some(&plan), FRESH) {
            Choice::Prefer { indices, .. } => assert_eq!(indices, vec![1]),
            other => panic!("expected a choice, got {other:?}"),
        }
        // Identical options: all of them.
        match choose(&[c[2].clone(), c[2].clone()], Some(&plan), FRESH) {
            Choice::Prefer {
                indices, reason, ..
            } => {
                assert_eq!(indices, vec![0, 1]);
                assert!(reason.contains("all 2 option(s) tie"), "{reason}");
            }
            other => panic!("expected a choice, got {other:?}"),
        }
    }

    #[test]
    fn node_groups_map_to_pools_by_template_labels() {
        let plan = seed_plan(0);
        let mut c = cand("eks-app-2a-123", 1, &[Resources::new(1000, GI)]);
        c.template = Some(TemplateNode {
            labels: BTreeMap::from([("pool".into(), "app".into())]),
            allocatable: Resources::new(8000, 32 * GI),
            max_pods: None,
            taints: vec![],
        });
        let d = cand("db-asg", 1, &[Resources::new(1000, GI)]);
        assert!(
            matches!(choose(&[d, c], Some(&plan), FRESH), Choice::Prefer { indices, .. } if indices == vec![1])
        );
    }

    #[test]
    fn abstains_when_in_doubt() {
        let plan = seed_plan(0);
        let pods = [Resources::new(1000, GI)];
        let known = cand("app-asg", 1, &pods);
        let unknown = cand("mystery", 1, &pods);

        let reason = |c: Choice| match c {
            Choice::Abstain { reason, .. } => reason,
            other => panic!("expected abstention, got {other:?}"),
        };
        let kind = |c: Choice| match c {
            Choice::Abstain { kind, .. } => kind,
            other => panic!("expected abstention, got {other:?}"),
        };
        assert!(reason(choose(
            &[known.clone(), unknown.clone()],
            Some(&plan),
            FRESH
        ))
        .contains("\"mystery\" belongs to no configured pool"));
        assert_eq!(
            kind(choose(&[known.clone(), unknown], Some(&plan), FRESH)),
            Abstention::UnknownNodeGroup
        );
        assert_eq!(
            kind(choose(std::slice::from_ref(&known), None, FRESH)),
            Abstention::NoPlan
        );
        assert_eq!(kind(choose(&[], Some(&plan), FRESH)).as_str(), "no_options");
        assert_eq!(
            reason(choose(std::slice::from_ref(&known), None, FRESH)),
            "no node-pool plan yet"
        );
        assert_eq!(
            reason(choose(&[], Some(&plan), FRESH)),
            "no options to choose from"
        );
        let late = Freshness {
            now_ms: 120_000,
            max_age_ms: 60_000,
        };
        assert!(
            reason(choose(std::slice::from_ref(&known), Some(&plan), late)).contains("120s old")
        );
        assert_eq!(
            kind(choose(std::slice::from_ref(&known), Some(&plan), late)),
            Abstention::StalePlan
        );

        let pools = [pool("app", 8000, 32)];
        let w = [workload("web", "app", None, Resources::new(1000, GI))];
        let blind = make_plan(&pools, &w, &BTreeMap::new(), 0);
        assert_eq!(
            reason(choose(std::slice::from_ref(&known), Some(&blind), FRESH)),
            "pool app has no forecast for web"
        );
        assert_eq!(
            kind(choose(&[known], Some(&blind), FRESH)),
            Abstention::IncompletePool
        );
    }

    #[test]
    fn pods_beyond_the_offered_nodes_count_as_more_nodes() {
        let plan = seed_plan(0);
        // Three 3500m pods need 2 app nodes (2 per node) although the option says 1.
        let pods = [Resources::new(3500, 4 * GI); 3];
        let s = score(&cand("app-asg", 1, &pods), &plan.pools[0]);
        // cpu: 10500 of 16000 used; memory: 12Gi of 64Gi.
        let expected = 0.5 * ((1.0 - 10500.0 / 16000.0) + (1.0 - 12.0 / 64.0));
        assert!(
            (s.waste - expected).abs() < 1e-12,
            "{} vs {expected}",
            s.waste
        );
    }
}
