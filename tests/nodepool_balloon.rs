//! The balloon metrics on their way to an HPA: the planner's count, served through
//! the API's Quantity formatting, read back the way the HPA reads it
//! (`MilliValue`, rounding up), divided by the `AverageValue` target with
//! `ceil`, gives back exactly the planner's count.

use std::collections::BTreeMap;

use prescale::api::quantity::format;
use prescale::plan::nodepool::{
    hpa_replicas, plan, Balloon, PoolSpec, PoolState, Resources, WorkloadSpec,
};
use prescale::quantity::Quantity;

const GI: u64 = 1 << 30;

/// What the HPA computes from a served Quantity string and its target.
fn hpa(served: &str, target_milli: u64) -> u64 {
    let milli = Quantity::parse(served).unwrap().milli_ceil();
    hpa_replicas(u64::try_from(milli).unwrap(), target_milli)
}

#[test]
fn served_balloon_values_yield_exactly_the_count() {
    for target_milli in [10, 100, 333, 1000, 1500, 2000, 7777, 100_000] {
        let b = Balloon::try_new(target_milli).unwrap();
        for count in (0..=200).chain([999, 1000, 1001, 65_535]) {
            let via_float = format(b.served_value(count)).unwrap();
            assert_eq!(
                hpa(&via_float, target_milli),
                u64::from(count),
                "{via_float} / {target_milli}m"
            );
            let exact = b.served_quantity(count);
            assert_eq!(
                hpa(&exact, target_milli),
                u64::from(count),
                "{exact} / {target_milli}m"
            );
        }
    }
}

#[test]
fn a_seed_pool_plan_drives_the_balloon_hpa() {
    // The seeds' application pool: c5.2xlarge (8 vCPU, 16 GiB; ~7910m / ~14.5Gi
    // allocatable), 3-20 nodes, ~150 m of DaemonSets per node.
    let pool = PoolSpec {
        name: "application".into(),
        node_group_ids: vec!["application-c5-2xlarge".into()],
        node_labels: BTreeMap::new(),
        allocatable: Resources::new(7910, 14_500 * (1 << 20)),
        max_pods_per_node: 58,
        daemonset_overhead: Resources::new(150, GI / 4),
        daemonset_pods: 3,
        provisioning_delay_s: 180,
        min_nodes: 3,
        max_nodes: 20,
    };
    // 3400 rps forecast, 100 rps per replica: 34 pods of 1 cpu / 2Gi. Room per node
    // 7760m / 14244Mi: 7 pods by cpu, but 6 by memory (7 x 2048Mi = 14336Mi): 6
    // nodes. The 20 running now take 4 nodes. Balloons: 2; nodes to add: 6 - 3 = 3.
    let web = WorkloadSpec {
        name: "web".into(),
        pool: "application".into(),
        forecast: Some(3400.0),
        target_per_replica: 100.0,
        pod_requests: Resources::new(1000, 2 * GI),
        min_replicas: 3,
        max_replicas: 100,
        current_replicas: 20,
    };
    let state = BTreeMap::from([("application".to_string(), PoolState { current_nodes: 3 })]);
    let p = plan(&[pool], &[web], &state, 0).unwrap();
    let p = &p.pools[0];
    assert_eq!(
        (
            p.nodes_needed,
            p.nodes_for_current_pods,
            p.balloons,
            p.extra_nodes
        ),
        (6, 4, 2, 3)
    );

    let b = Balloon::try_new(1000).unwrap();
    assert_eq!(hpa(&format(b.served_value(p.balloons)).unwrap(), 1000), 2);
    assert_eq!(
        hpa(&format(b.served_value(p.nodes_needed)).unwrap(), 1000),
        6
    );
}
