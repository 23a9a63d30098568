//! The serving rule, once, for every reader of a metric (external and custom
//! metrics, the KEDA scaler): which series a request gets, and when it gets none.
//! Pure: a snapshot entry and the clock's reading in, the series or the reason
//! out ([`Unservable`]), which maps to one HTTP status ([`Error`]).
//!
//! The rule:
//! - a namespace outside the metric's allow-list is refused (403): the metric
//!   exists, the namespace may not read it;
//! - no matching series while the signal's source fails is 503 ("source
//!   failing"): the series may exist, the source cannot say; without a failing
//!   source it is 404 with the reason (an empty list is an error to the HPA too);
//! - a selected series that is failed, or whose value outlived its
//!   `max_staleness` (its `expires_ms`), makes the whole answer 503, so the HPA
//!   holds instead of acting on part of the data;
//! - a value that is not a finite quantity is 503;
//! - an object metric with more than one series for one object is 400.

use super::status::Error;
use super::wire::describe;
use crate::quantity;
use crate::snapshot::{MetricEntry, SeriesEntry, Status};

/// Why a request gets no value. `subject` names what was asked in words
/// (`external metric "q"`, `custom metric "q" for pods of shop/web`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unservable {
    /// The metric is not one this API serves (the sentence says which API does).
    NotServed {
        /// Why, in a sentence.
        why: String,
    },
    /// The namespace is outside the metric's allow-list (or the object is
    /// cluster-scoped and the metric has one).
    NotAllowed {
        /// What was asked.
        subject: String,
        /// The namespace, `None` for a cluster-scoped object.
        namespace: Option<String>,
    },
    /// No series matches and the source is failing.
    SourceFailing {
        /// What was asked.
        subject: String,
        /// The source's error.
        error: String,
    },
    /// No series matches.
    NoMatch {
        /// Why, in a sentence.
        why: String,
    },
    /// A selected series is failed or expired.
    Failed {
        /// What was asked.
        subject: String,
        /// The series.
        labels: String,
        /// Why.
        reason: String,
    },
    /// A selected value is not a quantity.
    Unusable {
        /// What was asked.
        subject: String,
        /// The series, when the value is one series' (not a share of several).
        labels: Option<String>,
        /// Why.
        why: String,
    },
    /// More than one series for one object.
    Ambiguous {
        /// What was asked.
        subject: String,
        /// The series found.
        series: Vec<String>,
    },
}

impl From<Unservable> for Error {
    fn from(u: Unservable) -> Self {
        const HOLDS: &str = "the HPA holds its replica count until it recovers";
        match u {
            Unservable::NotServed { why } => Error::NotFound(why),
            Unservable::NotAllowed {
                subject,
                namespace: Some(ns),
            } => Error::Forbidden(format!(
                "{subject} is not served to namespace {ns:?} (it is outside the metric's namespace allow-list)"
            )),
            Unservable::NotAllowed {
                subject,
                namespace: None,
            } => Error::Forbidden(format!(
                "{subject} is served only to the namespaces of its allow-list, not for cluster-scoped objects"
            )),
            Unservable::SourceFailing { subject, error } => Error::ServiceUnavailable(format!(
                "{subject}: source failing, no series to serve: {error}; {HOLDS}"
            )),
            Unservable::NoMatch { why } => Error::NotFound(format!(
                "{why}; an empty list would be an error to the HPA as well, so none is returned"
            )),
            Unservable::Failed {
                subject,
                labels,
                reason,
            } => Error::ServiceUnavailable(format!(
                "{subject} series {labels} is failed: {reason}; {HOLDS}"
            )),
            Unservable::Unusable {
                subject,
                labels,
                why,
            } => Error::ServiceUnavailable(match labels {
                Some(labels) => format!("{subject} series {labels} has no usable value: {why}"),
                None => format!("{subject} has no usable value: {why}"),
            }),
            Unservable::Ambiguous { subject, series } => Error::BadRequest(format!(
                "{subject} has {} series ({}): an object has one value; narrow them with the HPA's metric.selector or aggregate them in the signal's query",
                series.len(),
                series.join(", ")
            )),
        }
    }
}

/// Whether `entry` may be read for an object in `namespace` (`None`:
/// cluster-scoped).
///
/// # Errors
/// [`Unservable::NotAllowed`] outside the allow-list.
pub fn allowed(
    subject: &str,
    entry: &MetricEntry,
    namespace: Option<&str>,
) -> Result<(), Unservable> {
    let Some(list) = &entry.namespaces else {
        return Ok(());
    };
    match namespace {
        Some(ns) if list.iter().any(|a| a == ns) => Ok(()),
        _ => Err(Unservable::NotAllowed {
            subject: subject.to_string(),
            namespace: namespace.map(str::to_string),
        }),
    }
}

/// The series of `entry` that `matches` picks, or why there are none
/// (`no_match` says it, given how many series the metric has).
///
/// # Errors
/// [`Unservable::SourceFailing`] when none matches and the source fails,
/// [`Unservable::NoMatch`] when none matches otherwise.
pub fn select<'a>(
    subject: &str,
    entry: &'a MetricEntry,
    matches: impl Fn(&SeriesEntry) -> bool,
    no_match: impl FnOnce(usize) -> String,
) -> Result<Vec<&'a SeriesEntry>, Unservable> {
    let selected: Vec<&SeriesEntry> = entry
        .series
        .iter()
        .map(|s| &**s)
        .filter(|s| matches(s))
        .collect();
    if !selected.is_empty() {
        return Ok(selected);
    }
    match &entry.error {
        Some(error) => Err(Unservable::SourceFailing {
            subject: subject.to_string(),
            error: error.clone(),
        }),
        None => Err(Unservable::NoMatch {
            why: no_match(entry.series.len()),
        }),
    }
}

/// `selected` when every one of them may be served at `now_ms`.
///
/// # Errors
/// [`Unservable::Failed`] for the first failed (or expired) series.
pub fn current<'a>(
    subject: &str,
    selected: Vec<&'a SeriesEntry>,
    now_ms: i64,
) -> Result<Vec<&'a SeriesEntry>, Unservable> {
    if let Some(failed) = selected
        .iter()
        .find(|s| s.status_at(now_ms) == Status::Failed)
    {
        // An expired value says so even if the engine's last word was `stale`.
        let reason = match (&failed.detail.reason, failed.status) {
            (Some(r), Status::Failed) => r.clone(),
            (r, _) => format!(
                "its data is older than the allowed staleness{}",
                r.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        };
        return Err(Unservable::Failed {
            subject: subject.to_string(),
            labels: describe(&failed.labels),
            reason,
        });
    }
    Ok(selected)
}

/// The one series of `selected` (an object's).
///
/// # Errors
/// [`Unservable::Ambiguous`] with more than one.
pub fn one<'a>(
    subject: &str,
    selected: Vec<&'a SeriesEntry>,
) -> Result<&'a SeriesEntry, Unservable> {
    match selected.as_slice() {
        [one] => Ok(one),
        many => Err(Unservable::Ambiguous {
            subject: subject.to_string(),
            series: many.iter().map(|s| describe(&s.labels)).collect(),
        }),
    }
}

/// `value` (of the series with `labels`, if it is one series') as a Kubernetes
/// Quantity, and the number that quantity denotes exactly ([`quantity::rounded`]).
///
/// # Errors
/// [`Unservable::Unusable`] for a value that is not a finite quantity.
pub fn quantity_of(
    subject: &str,
    labels: Option<&str>,
    value: f64,
) -> Result<(String, f64), Unservable> {
    let unusable = |e: quantity::NotFinite| Unservable::Unusable {
        subject: subject.to_string(),
        labels: labels.map(str::to_string),
        why: e.to_string(),
    };
    Ok((
        quantity::format(value).map_err(unusable)?,
        quantity::rounded(value).map_err(unusable)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SeriesDetail;

    fn series(queue: &str, status: Status, expires_ms: i64) -> SeriesEntry {
        SeriesEntry {
            labels: [("queue".to_string(), queue.to_string())].into(),
            status,
            value: 1.5,
            timestamp_ms: 0,
            window_s: 60,
            expires_ms,
            detail: SeriesDetail::default(),
        }
    }

    #[test]
    fn each_refusal_has_its_code() {
        let entry = MetricEntry {
            namespaces: Some(vec!["shop".into()]),
            series: vec![
                series("a", Status::Ok, 100).into(),
                series("b", Status::Ok, 10).into(),
            ],
            error: None,
            custom: None,
        };
        let s = "external metric \"q\"";
        assert_eq!(allowed(s, &entry, Some("shop")), Ok(()));
        let code = |u: Unservable| Error::from(u).code().as_u16();
        assert_eq!(code(allowed(s, &entry, Some("x")).unwrap_err()), 403);
        assert_eq!(code(allowed(s, &entry, None).unwrap_err()), 403);
        let is = |q: &'static str| move |e: &SeriesEntry| e.labels["queue"] == q;
        let none = select(s, &entry, is("z"), |n| format!("none of {n}")).unwrap_err();
        assert_eq!(
            none,
            Unservable::NoMatch {
                why: "none of 2".into()
            }
        );
        assert_eq!(code(none), 404);
        let failing = MetricEntry {
            error: Some("connection refused".into()),
            ..entry.clone()
        };
        let e = Error::from(select(s, &failing, is("z"), |_| String::new()).unwrap_err());
        assert_eq!(e.code().as_u16(), 503);
        assert!(e.to_string().contains("source failing") && e.to_string().contains("refused"));
        let both = select(s, &entry, |_| true, |_| String::new()).unwrap();
        assert_eq!(current(s, both.clone(), 10).unwrap().len(), 2);
        let expired = Error::from(current(s, both.clone(), 50).unwrap_err());
        assert_eq!(expired.code().as_u16(), 503);
        assert!(
            expired.to_string().contains("{queue=\"b\"}")
                && expired
                    .to_string()
                    .contains("older than the allowed staleness"),
            "{expired}"
        );
        assert_eq!(code(one(s, both).unwrap_err()), 400);
        assert_eq!(code(quantity_of(s, None, f64::NAN).unwrap_err()), 503);
        assert_eq!(
            quantity_of(s, Some("{}"), 1.5).unwrap(),
            ("1500m".to_string(), 1.5)
        );
    }
}
