//! An HPA's `spec.behavior`: stabilization windows, scaling policies, tolerances.
//!
//! The defaults are the Kubernetes API defaults (autoscaling/v2): scale-up has no
//! stabilization window and may add the larger of 100 % or 4 pods per 15 s;
//! scale-down holds the highest recommendation of the last 300 s and may remove
//! 100 % per 15 s. The tolerance is the controller's `--horizontal-pod-autoscaler-tolerance`
//! (0.1), overridable per direction as in the `tolerance` field of `HPAScalingRules`.

use serde::Deserialize;

use super::{Error, Result};

/// The controller's default tolerance around a usage ratio of 1.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// How a policy limits change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// At most `value` pods per period.
    Pods,
    /// At most `value` percent of the replicas at the start of the period.
    Percent,
}

/// One scaling policy: at most `value` (pods or percent) per `period_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Pods or percent.
    pub kind: PolicyKind,
    /// The amount of change allowed per period; positive.
    pub value: u32,
    /// The period the change is counted over, in seconds (1..=1800).
    pub period_s: u32,
}

/// Which policy wins when several apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy that allows the largest change.
    Max,
    /// The policy that allows the smallest change.
    Min,
    /// No scaling in this direction at all.
    Disabled,
}

/// The rules for one direction of scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRules {
    /// Seconds of past recommendations considered (0..=3600).
    pub stabilization_window_s: u32,
    /// Which policy wins.
    pub select_policy: SelectPolicy,
    /// The limits on change; never empty after defaulting.
    pub policies: Vec<Policy>,
    /// Usage ratios within this distance of 1 (on this side) cause no scaling.
    pub tolerance: f64,
}

impl ScalingRules {
    /// The Kubernetes default scale-up rules.
    pub fn default_up() -> Self {
        Self {
            stabilization_window_s: 0,
            select_policy: SelectPolicy::Max,
            policies: vec![
                Policy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period_s: 15,
                },
                Policy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period_s: 15,
                },
            ],
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// The Kubernetes default scale-down rules.
    pub fn default_down() -> Self {
        Self {
            stabilization_window_s: 300,
            select_policy: SelectPolicy::Max,
            policies: vec![Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period_s: 15,
            }],
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// The longest policy period in seconds (how long scale events matter).
    pub fn longest_period_s(&self) -> u32 {
        self.policies.iter().map(|p| p.period_s).max().unwrap_or(0)
    }
}

/// An HPA's scaling behavior.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// Rules for scaling up.
    pub scale_up: ScalingRules,
    /// Rules for scaling down.
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            scale_up: ScalingRules::default_up(),
            scale_down: ScalingRules::default_down(),
        }
    }
}

impl Behavior {
    /// Parses the YAML of an HPA's `spec.behavior`, or a whole HPA manifest (its
    /// `spec.behavior` is used). Omitted fields take the Kubernetes defaults.
    ///
    /// # Errors
    /// [`Error::Behavior`] naming the field for invalid YAML, unknown fields or
    /// values out of range.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| Error::Behavior {
            field: "behavior".to_string(),
            reason: e.to_string(),
        })?;
        let is_manifest = value.get("spec").is_some() || value.get("kind").is_some();
        let wire = if is_manifest {
            let doc: WireManifest = serde_yaml::from_str(text).map_err(|e| Error::Behavior {
                field: "spec.behavior".to_string(),
                reason: e.to_string(),
            })?;
            doc.spec
                .and_then(|s| s.behavior)
                .ok_or_else(|| Error::Behavior {
                    field: "spec.behavior".to_string(),
                    reason: "the HPA manifest has no spec.behavior".to_string(),
                })?
        } else if value.is_null() {
            WireBehavior::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| Error::Behavior {
                field: "behavior".to_string(),
                reason: e.to_string(),
            })?
        };
        Ok(Self {
            scale_up: rules(wire.scale_up, ScalingRules::default_up(), "scaleUp")?,
            scale_down: rules(wire.scale_down, ScalingRules::default_down(), "scaleDown")?,
        })
    }
}

#[derive(Debug, Deserialize)]
struct WireManifest {
    spec: Option<WireSpec>,
}

#[derive(Debug, Deserialize)]
struct WireSpec {
    behavior: Option<WireBehavior>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireBehavior {
    scale_up: Option<WireRules>,
    scale_down: Option<WireRules>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireRules {
    stabilization_window_seconds: Option<i64>,
    select_policy: Option<String>,
    policies: Option<Vec<WirePolicy>>,
    tolerance: Option<NumberOrString>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WirePolicy {
    #[serde(rename = "type")]
    kind: String,
    value: i64,
    period_seconds: i64,
}

/// A Kubernetes quantity as YAML gives it: `0.05` or `"50m"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(f64),
    String(String),
}

fn bad(field: String, reason: String) -> Error {
    Error::Behavior { field, reason }
}

fn rules(wire: Option<WireRules>, default: ScalingRules, at: &str) -> Result<ScalingRules> {
    let Some(w) = wire else {
        return Ok(default);
    };
    let stabilization_window_s = match w.stabilization_window_seconds {
        None => default.stabilization_window_s,
        Some(s) if (0..=3600).contains(&s) => s as u32,
        Some(s) => {
            return Err(bad(
                format!("{at}.stabilizationWindowSeconds"),
                format!("must be in 0..=3600, got {s}"),
            ))
        }
    };
    let select_policy = match w.select_policy.as_deref() {
        None | Some("Max") => SelectPolicy::Max,
        Some("Min") => SelectPolicy::Min,
        Some("Disabled") => SelectPolicy::Disabled,
        Some(other) => {
            return Err(bad(
                format!("{at}.selectPolicy"),
                format!("must be one of Max, Min, Disabled, got {other:?}"),
            ))
        }
    };
    let policies = match w.policies {
        None => default.policies,
        Some(ps) if ps.is_empty() => default.policies,
        Some(ps) => ps
            .into_iter()
            .enumerate()
            .map(|(i, p)| policy(p, &format!("{at}.policies[{i}]")))
            .collect::<Result<Vec<_>>>()?,
    };
    let tolerance = match w.tolerance {
        None => default.tolerance,
        Some(t) => {
            let v = match t {
                NumberOrString::Number(v) => Some(v),
                NumberOrString::String(s) => parse_quantity(&s),
            };
            match v {
                Some(v) if v.is_finite() && v >= 0.0 => v,
                _ => {
                    return Err(bad(
                        format!("{at}.tolerance"),
                        "must be a non-negative quantity such as 0.05 or 50m".to_string(),
                    ))
                }
            }
        }
    };
    Ok(ScalingRules {
        stabilization_window_s,
        select_policy,
        policies,
        tolerance,
    })
}

fn policy(p: WirePolicy, at: &str) -> Result<Policy> {
    let kind = match p.kind.as_str() {
        "Pods" => PolicyKind::Pods,
        "Percent" => PolicyKind::Percent,
        other => {
            return Err(bad(
                format!("{at}.type"),
                format!("must be one of Pods, Percent, got {other:?}"),
            ))
        }
    };
    if p.value <= 0 || p.value > i64::from(u32::MAX) {
        return Err(bad(
            format!("{at}.value"),
            format!("must be positive, got {}", p.value),
        ));
    }
    if !(1..=1800).contains(&p.period_seconds) {
        return Err(bad(
            format!("{at}.periodSeconds"),
            format!("must be in 1..=1800, got {}", p.period_seconds),
        ));
    }
    Ok(Policy {
        kind,
        value: p.value as u32,
        period_s: p.period_seconds as u32,
    })
}

/// Parses the plain decimal and milli forms of a Kubernetes quantity.
fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    match s.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|v| v / 1000.0),
        None => s.parse::<f64>().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_the_kubernetes_defaults() {
        assert_eq!(Behavior::from_yaml("").unwrap(), Behavior::default());
        assert_eq!(Behavior::from_yaml("{}").unwrap(), Behavior::default());
    }

    #[test]
    fn parses_a_behavior_and_defaults_what_is_omitted() {
        let b = Behavior::from_yaml(
            "scaleDown:\n  stabilizationWindowSeconds: 60\n  selectPolicy: Min\n  policies:\n  - type: Pods\n    value: 2\n    periodSeconds: 60\n  - type: Percent\n    value: 10\n    periodSeconds: 60\n  tolerance: 50m\n",
        )
        .unwrap();
        assert_eq!(b.scale_up, ScalingRules::default_up());
        assert_eq!(b.scale_down.stabilization_window_s, 60);
        assert_eq!(b.scale_down.select_policy, SelectPolicy::Min);
        assert_eq!(b.scale_down.policies.len(), 2);
        assert_eq!(b.scale_down.policies[0].kind, PolicyKind::Pods);
        assert!((b.scale_down.tolerance - 0.05).abs() < 1e-12);
    }

    #[test]
    fn reads_the_behavior_of_a_whole_hpa_manifest() {
        let b = Behavior::from_yaml(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  maxReplicas: 10\n  behavior:\n    scaleUp:\n      selectPolicy: Disabled\n",
        )
        .unwrap();
        assert_eq!(b.scale_up.select_policy, SelectPolicy::Disabled);
        assert_eq!(b.scale_down, ScalingRules::default_down());
    }

    #[test]
    fn errors_name_the_field() {
        let e = Behavior::from_yaml(
            "scaleUp:\n  policies:\n  - type: Pods\n    value: 4\n    periodSeconds: 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("scaleUp.policies[0].periodSeconds"), "{e}");
        let e = Behavior::from_yaml("scaleUp:\n  selectPolicy: Sometimes\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scaleUp.selectPolicy"), "{e}");
        let e = Behavior::from_yaml("scaleUp:\n  stabilisationWindow: 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
