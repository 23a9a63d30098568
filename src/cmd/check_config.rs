//! `prescale check-config`: validate a configuration file without starting anything.

use std::path::PathBuf;

use anyhow::Context;

use prescale::config::Config;

/// Arguments of `prescale check-config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file to validate.
    pub file: PathBuf,
}

/// Runs `prescale check-config`: prints a summary of the signals, or every problem.
///
/// # Errors
/// When the file cannot be read, does not parse, or fails validation.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::from_file(&args.file).with_context(|| {
        format!(
            "{} is not a valid prescale configuration",
            args.file.display()
        )
    })?;
    outln!(
        "{}: ok, {} signal(s), Prometheus {}",
        args.file.display(),
        config.signals.len(),
        config.prometheus.url
    );
    for s in &config.signals {
        // Validated above, so the mapping builds; its rendering says what an HPA asks for.
        let served = match s.custom.as_ref().map(|c| c.mapping("custom")) {
            None => "external".to_string(),
            Some(Ok(m)) => format!(
                "custom {:?} ({})",
                m.metric_type(),
                m.labels()
                    .map(|(label, r)| format!("{label} -> {}", r.qualified()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(Err(problems)) => format!("custom, invalid: {}", problems.join("; ")),
        };
        outln!(
            "  {} [{served}]: step {}, history {}, lead time {}, q{}, model {}, floor {}",
            s.name,
            s.step,
            s.history,
            s.lead_time,
            s.quantile.get(),
            s.model.name(),
            if s.reactive_floor { "on" } else { "off" }
        );
    }
    for p in &config.nodepools {
        let allocatable = p.allocatable.map_or_else(
            || "read from its nodes".to_string(),
            |a| a.resources().to_string(),
        );
        outln!(
            "  node pool {}: {}-{} nodes, allocatable {allocatable}, ready after {}",
            p.name,
            p.min_nodes,
            p.max_nodes,
            p.provisioning_delay
        );
    }
    for w in &config.workloads {
        outln!(
            "  workload {} in pool {}: {} / {} per replica, {}-{} replicas, start-up {}",
            w.name,
            w.pool,
            w.signal,
            w.target_per_replica,
            w.min_replicas,
            w.max_replicas,
            w.pod_startup
        );
    }
    if let Some(e) = &config.expander {
        outln!("  gRPC expander on {}", e.address);
    }
    if config.capacity_buffers.enabled {
        outln!(
            "  CapacityBuffers{} (lease {}/{})",
            if config.capacity_buffers.dry_run {
                " (dry run)"
            } else {
                ""
            },
            config.capacity_buffers.lease_namespace,
            config.capacity_buffers.lease_name
        );
    }
    Ok(())
}
