//! OpenMetrics and Prometheus text exposition with timestamps: the format
//! `promtool tsdb create-blocks-from openmetrics` backfills from.

use std::collections::HashMap;
use std::io;

use super::{
    format_seconds, format_value, parse_value, seconds_to_ms, Error, LabeledSeries, Labels,
    RawSeries, Result, Sample,
};

/// Metric types a `# TYPE` line may name (OpenMetrics and Prometheus text).
const METRIC_TYPES: &[&str] = &[
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "stateset",
    "info",
    "summary",
    "unknown",
    "untyped",
];

/// Reads samples with timestamps from OpenMetrics or Prometheus text exposition,
/// one series per distinct label set (`__name__` included), in order of first
/// appearance.
///
/// Which of the two it is decides the timestamp unit: input with a `# EOF` line
/// is OpenMetrics, whose timestamps are unix seconds (possibly fractional);
/// without it, it is the Prometheus text format, whose timestamps are integer
/// milliseconds. `# TYPE`, `# HELP`, `# UNIT` and other comment lines are read
/// past; label values may use the escapes `\\`, `\"` and `\n`; exemplars after
/// ` # ` are ignored. Duplicate timestamps keep the last sample, unsorted series
/// are sorted; both are counted in each series' report.
///
/// # Errors
/// [`Error::Line`] naming the first malformed line: a bad metric or label name,
/// an unterminated label set or value, an unknown escape, a bad or non-finite
/// value, a missing or bad timestamp, a malformed `# TYPE` line, or anything after
/// `# EOF`.
pub fn read_openmetrics(text: &str) -> Result<Vec<RawSeries>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let openmetrics = text.lines().any(|l| l.trim_end() == "# EOF");
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut series: Vec<(Labels, Vec<Sample>)> = Vec::new();
    let mut eof = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| Error::Line { line, message };
        let l = raw.trim_end();
        if eof {
            if l.is_empty() {
                continue;
            }
            return Err(err(
                "unexpected content after `# EOF`; expected the end of the input".to_string(),
            ));
        }
        if l.trim().is_empty() {
            continue;
        }
        if let Some(comment) = l.strip_prefix('#') {
            if l == "# EOF" {
                eof = true;
            } else {
                check_comment(comment).map_err(err)?;
            }
            continue;
        }
        let (labels, sample) = parse_sample(l, openmetrics).map_err(err)?;
        let k = *index.entry(labels).or_insert_with_key(|labels| {
            series.push((labels.clone(), Vec::new()));
            series.len() - 1
        });
        series[k].1.push(sample);
    }
    Ok(series
        .into_iter()
        .map(|(labels, samples)| RawSeries::new(labels, samples))
        .collect())
}

/// Checks `# TYPE name type`; other comments (`HELP`, `UNIT`, free text) pass.
fn check_comment(comment: &str) -> Result<(), String> {
    let mut words = comment.split_whitespace();
    if words.next() != Some("TYPE") {
        return Ok(());
    }
    let expected = "expected `# TYPE <metric name> <type>`";
    let (Some(name), Some(kind), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("malformed TYPE line: {expected}"));
    };
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?} in TYPE line: {expected}"));
    }
    if !METRIC_TYPES.contains(&kind) {
        return Err(format!(
            "unknown metric type {kind:?}: expected one of {}",
            METRIC_TYPES.join(", ")
        ));
    }
    Ok(())
}

/// Parses `name{l="v",...} value timestamp [# exemplar]`.
fn parse_sample(line: &str, openmetrics: bool) -> Result<(Labels, Sample), String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!(
            "bad metric name {name:?}: expected [a-zA-Z_:][a-zA-Z0-9_:]* followed by labels or a value"
        ));
    }
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    if labels
        .insert("__name__".to_string(), name.to_string())
        .is_some()
    {
        return Err(format!(
            "label __name__ given as well as the metric name {name:?}: expected one name"
        ));
    }
    if !rest.starts_with(|c: char| c.is_whitespace()) {
        return Err(format!(
            "expected a space and a value after {name}, found {:?}",
            rest.chars().next().map(String::from).unwrap_or_default()
        ));
    }
    let mut words = rest.split_whitespace();
    let value = parse_value(words.next().unwrap_or(""))?;
    let Some(ts) = words.next() else {
        return Err(
            "missing timestamp: expected `name{labels} value timestamp` (samples without a timestamp have no time)"
                .to_string(),
        );
    };
    if ts == "#" {
        return Err(
            "missing timestamp before the exemplar: expected `value timestamp`".to_string(),
        );
    }
    let ts_ms = if openmetrics {
        let secs: f64 = ts
            .parse()
            .map_err(|_| format!("bad timestamp {ts:?}: expected unix seconds (OpenMetrics)"))?;
        seconds_to_ms(secs, ts)?
    } else {
        ts.parse::<i64>().map_err(|_| {
            format!(
                "bad timestamp {ts:?}: expected integer unix milliseconds (Prometheus text format; \
                 add `# EOF` for OpenMetrics with seconds)"
            )
        })?
    };
    if let Some(extra) = words.next() {
        if extra != "#" {
            return Err(format!(
                "unexpected {extra:?} after the timestamp: expected the end of the line or an exemplar `# {{...}}`"
            ));
        }
    }
    Ok((labels, Sample { ts_ms, value }))
}

/// Parses the label set after `{`, returning what follows the closing `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Labels) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let name_end = s
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(s.len());
        let name = &s[..name_end];
        if !is_label_name(name) {
            return Err(format!(
                "bad label name {name:?}: expected [a-zA-Z_][a-zA-Z0-9_]* or `}}`"
            ));
        }
        s = s[name_end..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("expected `=` after label name {name:?}"))?
            .trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("expected a quoted value for label {name:?}"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => {
                    return Err(format!(
                        "unterminated value for label {name:?}: expected a closing `\"`"
                    ))
                }
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => {
                        return Err(format!(
                            "unknown escape `\\{c}` in label {name:?}: expected \\\\, \\\" or \\n"
                        ))
                    }
                    None => {
                        return Err(format!(
                            "unterminated value for label {name:?}: expected a closing `\"`"
                        ))
                    }
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!(
                "label {name:?} given twice: expected each label once"
            ));
        }
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!(
                "expected `,` or `}}` after the value of label {name:?}"
            ));
        }
    }
}

/// Whether `s` is a valid metric name.
fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `s` is a valid label name.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Escapes a label value for the exposition formats.
fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes series as OpenMetrics in the form `promtool tsdb create-blocks-from
/// openmetrics` backfills: per metric family (the `__name__` label, families in
/// order of first appearance) a `# TYPE <name> gauge` line, then every series of
/// that family with its samples in ascending time, timestamps in unix seconds,
/// gaps left out; a final `# EOF`.
///
/// # Errors
/// [`Error::Unwritable`] when a series has no `__name__` or an invalid metric or
/// label name, or when two series have the same labels (the output would
/// interleave them out of time order); [`Error::Write`] when `out` fails. Nothing
/// is written when a series is unwritable.
pub fn write_openmetrics(series: &[LabeledSeries], out: &mut dyn io::Write) -> Result<()> {
    let mut families: Vec<(&str, Vec<&LabeledSeries>)> = Vec::new();
    let mut seen: HashMap<&Labels, ()> = HashMap::new();
    for s in series {
        let unwritable = |message: String| Error::Unwritable {
            series: s.labels.to_string(),
            message,
        };
        let name = s
            .labels
            .get("__name__")
            .ok_or_else(|| unwritable("no __name__ label: expected a metric name".to_string()))?;
        if !is_metric_name(name) {
            return Err(unwritable(format!(
                "bad metric name {name:?}: expected [a-zA-Z_:][a-zA-Z0-9_:]*"
            )));
        }
        if let Some(bad) = s.labels.keys().find(|k| !is_label_name(k)) {
            return Err(unwritable(format!(
                "bad label name {bad:?}: expected [a-zA-Z_][a-zA-Z0-9_]*"
            )));
        }
        if seen.insert(&s.labels, ()).is_some() {
            return Err(unwritable(
                "two series with the same labels: expected each label set once".to_string(),
            ));
        }
        match families.iter_mut().find(|(n, _)| *n == name.as_str()) {
            Some((_, members)) => members.push(s),
            None => families.push((name.as_str(), vec![s])),
        }
    }
    let write = |out: &mut dyn io::Write| -> io::Result<()> {
        for (name, members) in &families {
            writeln!(out, "# TYPE {name} gauge")?;
            for s in members {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k.as_str() != "__name__")
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
                    .collect();
                let selector = if labels.is_empty() {
                    (*name).to_string()
                } else {
                    format!("{name}{{{}}}", labels.join(","))
                };
                for sample in s.series.to_samples() {
                    writeln!(
                        out,
                        "{selector} {} {}",
                        format_value(sample.value),
                        format_seconds(sample.ts_ms)
                    )?;
                }
            }
        }
        writeln!(out, "# EOF")?;
        out.flush()
    };
    write(out).map_err(|source| Error::Write {
        what: "OpenMetrics",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Series;

    fn line_error(text: &str) -> (usize, String) {
        match read_openmetrics(text) {
            Err(Error::Line { line, message }) => (line, message),
            other => panic!("expected a line error for {text:?}, got {other:?}"),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_openmetrics_with_seconds() {
        let text = "# HELP cpu CPU use.\n# TYPE cpu gauge\n# UNIT cpu ratio\n\
            cpu{pod=\"a\",path=\"C:\\\\x \\\"q\\\"\\nz\"} 0.5 1700000000\n\
            cpu{pod=\"b\"} 1 1700000000.25\n\
            cpu{pod=\"a\",path=\"C:\\\\x \\\"q\\\"\\nz\"} 0.75 1700000060 # {trace_id=\"1\"} 1 1700000060\n\
            requests_total 10 1700000000\n# EOF\n";
        let series = read_openmetrics(text).unwrap();
        assert_eq!(series.len(), 3);
        assert_eq!(
            series[0].labels,
            labels(&[
                ("__name__", "cpu"),
                ("pod", "a"),
                ("path", "C:\\x \"q\"\nz")
            ])
        );
        assert_eq!(
            series[0].samples,
            vec![
                Sample {
                    ts_ms: 1_700_000_000_000,
                    value: 0.5
                },
                Sample {
                    ts_ms: 1_700_000_060_000,
                    value: 0.75
                },
            ]
        );
        assert_eq!(series[1].samples[0].ts_ms, 1_700_000_000_250);
        assert_eq!(series[2].labels, labels(&[("__name__", "requests_total")]));
    }

    #[test]
    fn reads_prometheus_text_with_milliseconds() {
        let text =
            "# TYPE up gauge\nup{job=\"a\", } 1 1700000000123\nup{job=\"a\"} 0 1700000000000\n";
        let series = read_openmetrics(text).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(
            series[0].samples[1],
            Sample {
                ts_ms: 1_700_000_000_123,
                value: 1.0
            }
        );
        assert!(series[0].report.was_unsorted());
    }

    #[test]
    fn rejects_malformed_lines_naming_them() {
        let cases: &[(&str, usize, &str)] = &[
            ("# TYPE x gauge\nx 1\n# EOF\n", 2, "missing timestamp"),
            ("x NaN 1\n# EOF\n", 1, "non-finite"),
            ("x 1 1\nx +Inf 2\n# EOF\n", 2, "non-finite"),
            ("x 1 1\n# EOF\nx 2 2\n", 3, "after `# EOF`"),
            ("x{a=\"1\" 1 1\n", 1, "expected `,` or `}`"),
            ("x{a=\"1} 1 1\n", 1, "unterminated"),
            ("x{a=\"\\t\"} 1 1\n", 1, "unknown escape"),
            ("x{1a=\"1\"} 1 1\n", 1, "bad label name"),
            ("x{a=1} 1 1\n", 1, "quoted value"),
            ("x{a=\"1\",a=\"2\"} 1 1\n", 1, "given twice"),
            ("9x 1 1\n", 1, "bad metric name"),
            ("x one 1\n", 1, "bad number"),
            ("x 1 1.5\n", 1, "integer unix milliseconds"),
            ("x 1 soon\n# EOF\n", 1, "unix seconds"),
            ("x 1 2 3\n", 1, "after the timestamp"),
            ("ok 1 2\n# TYPE x\n", 2, "malformed TYPE"),
            ("# TYPE x meter\n", 1, "unknown metric type"),
        ];
        for (text, want_line, want) in cases {
            let (line, msg) = line_error(text);
            assert_eq!(line, *want_line, "{text:?}: {msg}");
            assert!(msg.contains(want), "{text:?}: {msg:?} lacks {want:?}");
        }
    }

    fn labeled(name: &str, extra: &[(&str, &str)], series: Series) -> LabeledSeries {
        let mut l = labels(extra);
        l.insert("__name__".to_string(), name.to_string());
        LabeledSeries { labels: l, series }
    }

    #[test]
    fn writes_families_grouped_with_seconds_and_eof() {
        let s = |values: Vec<f64>| Series {
            start_ms: 1_700_000_000_000,
            step_ms: 30_000,
            values,
        };
        let all = vec![
            labeled("cpu", &[("pod", "a\"b")], s(vec![1.0, f64::NAN, 3.5])),
            labeled("mem", &[], s(vec![10.0])),
            labeled("cpu", &[("pod", "c")], s(vec![2.0])),
        ];
        let mut buf = Vec::new();
        write_openmetrics(&all, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "# TYPE cpu gauge\n\
             cpu{pod=\"a\\\"b\"} 1 1700000000\n\
             cpu{pod=\"a\\\"b\"} 3.5 1700000060\n\
             cpu{pod=\"c\"} 2 1700000000\n\
             # TYPE mem gauge\n\
             mem 10 1700000000\n\
             # EOF\n"
        );
        let back = read_openmetrics(&text).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].labels, all[0].labels);
        assert_eq!(back[0].samples, all[0].series.to_samples());
    }

    proptest::proptest! {
        #[test]
        fn any_label_value_and_value_round_trip(
            label in "\\PC*|[\\\\\"\n{},= #]*",
            value in proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL,
            start in -1_000_000_000_000_i64..4_000_000_000_000,
        ) {
            let series = Series { start_ms: start, step_ms: 1, values: vec![value, f64::NAN, -value] };
            let all = vec![labeled("m", &[("l", &label)], series)];
            let mut buf = Vec::new();
            write_openmetrics(&all, &mut buf).unwrap();
            let back = read_openmetrics(std::str::from_utf8(&buf).unwrap()).unwrap();
            proptest::prop_assert_eq!(back.len(), 1);
            proptest::prop_assert_eq!(&back[0].labels, &all[0].labels);
            proptest::prop_assert_eq!(&back[0].samples, &all[0].series.to_samples());
        }
    }

    #[test]
    fn refuses_unwritable_series() {
        let s = Series {
            start_ms: 0,
            step_ms: 1,
            values: vec![1.0],
        };
        let no_name = LabeledSeries {
            labels: Labels::new(),
            series: s.clone(),
        };
        let bad_name = labeled("a-b", &[], s.clone());
        let bad_label = labeled("a", &[("x-y", "1")], s.clone());
        let dup = vec![labeled("a", &[], s.clone()), labeled("a", &[], s)];
        for input in [vec![no_name], vec![bad_name], vec![bad_label], dup] {
            let mut buf = Vec::new();
            assert!(matches!(
                write_openmetrics(&input, &mut buf),
                Err(Error::Unwritable { .. })
            ));
            assert!(buf.is_empty());
        }
    }
}
