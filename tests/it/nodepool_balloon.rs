//! The balloon metrics on their way to an HPA: the planner's count, served through
//! the API's Quantity formatting, read back the way the HPA reads it
//! (`MilliValue`, rounding up), divided by the `AverageValue` target with
//! `ceil`, gives back exactly the planner's count.

use crate::support;

use std::collections::BTreeMap;

use prescale::plan::nodepool::{
    hpa_replicas, plan, Balloon, PoolShape, PoolSpec, PoolState, Resources, WorkloadShape,
    WorkloadSpec,
};
use prescale::quantity::format;
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
    let pool = PoolSpec::try_new(PoolShape {
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
    })
    .unwrap();
    // 3400 rps forecast, 100 rps per replica: 34 pods of 1 cpu / 2Gi. Room per node
    // 7760m / 14244Mi: 7 pods by cpu, but 6 by memory (7 x 2048Mi = 14336Mi): 6
    // nodes. The 20 running now take 4 nodes. Balloons: 2; nodes to add: 6 - 3 = 3.
    let web = WorkloadSpec::try_new(WorkloadShape {
        name: "web".into(),
        pool: "application".into(),
        target_per_replica: 100.0,
        pod_requests: Resources::new(1000, 2 * GI),
        min_replicas: 3,
        max_replicas: 100,
    })
    .unwrap()
    .with_forecast(Some(3400.0))
    .with_current_replicas(20);
    let state = BTreeMap::from([("application".to_string(), PoolState { current_nodes: 3 })]);
    let p = plan(&[pool], &[web], &state, 0);
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

/// `kubectl kustomize deploy/examples`, or `None` (with a message) without kubectl.
fn render_examples() -> Option<Vec<serde_yaml::Value>> {
    use serde::Deserialize;
    let kubectl = support::peers::kubectl()?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let out = std::process::Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect(),
    )
}

fn text<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(serde_yaml::Value::as_str)
        .unwrap_or_else(|| panic!("{path:?} missing"))
}

#[test]
fn the_rendered_balloon_hpas_read_the_served_counts_of_the_documented_pools() {
    let Some(docs) = render_examples() else {
        return;
    };
    let config = prescale::config::Config::from_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/prescale.yaml"),
    )
    .unwrap();
    let kind = |k: &'static str| docs.iter().filter(move |d| text(d, &["kind"]) == k);
    let mut pools_seen = Vec::new();
    for hpa_doc in kind("HorizontalPodAutoscaler") {
        let metric = &hpa_doc["spec"]["metrics"][0]["external"];
        if metric["metric"]["name"].as_str() != Some("prescale_nodepool_balloons") {
            continue;
        }
        let pool_name = text(metric, &["metric", "selector", "matchLabels", "nodepool"]);
        let pool = config
            .nodepools
            .iter()
            .find(|p| p.name == pool_name)
            .unwrap_or_else(|| {
                panic!("HPA for pool {pool_name}: no such pool in the example config")
            });
        // The HPA's target, as the HPA controller parses it.
        let target = Quantity::parse(text(metric, &["target", "averageValue"]))
            .unwrap()
            .milli_ceil();
        let target = u64::try_from(target).unwrap();
        assert_eq!(
            target,
            pool.balloon_target.get(),
            "pool {pool_name}: the HPA's averageValue differs from the served target"
        );
        // What prescale serves for each count, through the API's formatting, yields
        // that count at this HPA.
        let b = Balloon::try_new(pool.balloon_target.get()).unwrap();
        let max = hpa_doc["spec"]["maxReplicas"].as_u64().unwrap();
        for count in 0..=u32::try_from(max).unwrap() {
            let served = format(b.served_value(count)).unwrap();
            assert_eq!(
                hpa(&served, target),
                u64::from(count),
                "{pool_name}: {served}"
            );
        }
        // The Deployment it scales: on the pool's nodes, and one balloon fits one
        // of them (else the cluster-autoscaler could never add a node for it).
        let target_name = text(hpa_doc, &["spec", "scaleTargetRef", "name"]);
        let dep = kind("Deployment")
            .find(|d| text(d, &["metadata", "name"]) == target_name)
            .unwrap();
        let pod = &dep["spec"]["template"]["spec"];
        for (k, v) in &pool.node_labels {
            assert_eq!(
                pod["nodeSelector"][k.as_str()].as_str(),
                Some(v.as_str()),
                "{target_name}: nodeSelector {k}"
            );
        }
        let requests = &pod["containers"][0]["resources"]["requests"];
        let cpu = prescale::quantity::parse_millicores(text(requests, &["cpu"])).unwrap();
        let memory = prescale::quantity::parse_units(text(requests, &["memory"])).unwrap();
        let built = config
            .planning
            .pools
            .iter()
            .find(|p| p.name() == pool_name)
            .unwrap();
        let spec = built.spec(built.allocatable().unwrap()).unwrap();
        let room = spec.room_per_node();
        assert!(
            Resources::new(cpu, memory).fits_in(room),
            "{target_name}: a balloon ({cpu}m, {memory}B) does not fit a {pool_name} node ({room})"
        );
        pools_seen.push(pool_name.to_string());
    }
    pools_seen.sort();
    assert_eq!(pools_seen, ["application", "cache", "database"]);
}
