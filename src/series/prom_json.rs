//! The Prometheus HTTP API's range-query response (`/api/v1/query_range`).

use serde_json::{Map, Value};

use super::{Error, Labels, RawSeries, Result, Sample};

/// Reads a Prometheus range-query response: the full envelope
/// `{"status":"success","data":{"resultType":"matrix","result":[...]}}` or just
/// its `data` object. Each result becomes one series with the result's labels;
/// `values` are `[<unix seconds>, "<value>"]` pairs. Native-histogram samples
/// (`histograms`) are ignored.
///
/// # Errors
/// [`Error::JsonSyntax`] for text that is not JSON, [`Error::Prometheus`] for a
/// `"status": "error"` response (carrying its `errorType` and `error`), and
/// [`Error::Json`] naming the place for everything else: a result type other
/// than `matrix`, a malformed entry, or a non-finite value (Prometheus writes
/// NaN and ±Inf as the strings `"NaN"`, `"+Inf"`, `"-Inf"`).
pub fn read_prom_json(text: &str) -> Result<Vec<RawSeries>> {
    let root: Value = serde_json::from_str(text).map_err(|source| Error::JsonSyntax {
        line: source.line(),
        column: source.column(),
        source,
    })?;
    let Value::Object(root) = root else {
        return Err(json_err(
            "top level",
            format!(
                "expected an object with \"status\" and \"data\", got {}",
                kind(&root)
            ),
        ));
    };
    let data = if let Some(status) = root.get("status") {
        match status.as_str() {
            Some("success") => match root.get("data") {
                Some(Value::Object(data)) => data,
                Some(other) => {
                    return Err(json_err(
                        "data",
                        format!("expected an object, got {}", kind(other)),
                    ))
                }
                None => return Err(json_err("data", "missing; expected the query result")),
            },
            Some("error") => {
                let field = |name: &str| {
                    root.get(name)
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string()
                };
                return Err(Error::Prometheus {
                    error_type: field("errorType"),
                    error: field("error"),
                });
            }
            _ => {
                return Err(json_err(
                    "status",
                    format!("expected \"success\" or \"error\", got {status}"),
                ))
            }
        }
    } else if root.contains_key("resultType") {
        &root
    } else {
        return Err(json_err(
            "top level",
            "expected a response with \"status\" and \"data\", or its data object with \"resultType\" and \"result\"",
        ));
    };
    read_data(data)
}

/// Reads the `data` object of a range query.
fn read_data(data: &Map<String, Value>) -> Result<Vec<RawSeries>> {
    match data.get("resultType") {
        Some(Value::String(t)) if t == "matrix" => {}
        Some(Value::String(t)) => {
            return Err(json_err(
                "data.resultType",
                format!("expected \"matrix\" (a range query), got {t:?}"),
            ))
        }
        Some(other) => {
            return Err(json_err(
                "data.resultType",
                format!("expected the string \"matrix\", got {}", kind(other)),
            ))
        }
        None => return Err(json_err("data.resultType", "missing; expected \"matrix\"")),
    }
    let result = match data.get("result") {
        Some(Value::Array(result)) => result,
        Some(other) => {
            return Err(json_err(
                "data.result",
                format!("expected an array of series, got {}", kind(other)),
            ))
        }
        None => {
            return Err(json_err(
                "data.result",
                "missing; expected an array of series",
            ))
        }
    };
    result
        .iter()
        .enumerate()
        .map(|(i, entry)| read_series(i, entry))
        .collect()
}

/// Reads one element of `result`: `{"metric": {...}, "values": [[t, "v"], ...]}`.
fn read_series(i: usize, entry: &Value) -> Result<RawSeries> {
    let here = format!("data.result[{i}]");
    let Value::Object(entry) = entry else {
        return Err(json_err(
            &here,
            format!("expected a series object, got {}", kind(entry)),
        ));
    };
    let mut labels = Labels::new();
    match entry.get("metric") {
        Some(Value::Object(metric)) => {
            for (name, value) in metric {
                let Value::String(value) = value else {
                    return Err(json_err(
                        &format!("{here}.metric.{name}"),
                        format!("expected a string label value, got {}", kind(value)),
                    ));
                };
                labels.insert(name.clone(), value.clone());
            }
        }
        // An expression without labels may come back with no metric at all.
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(json_err(
                &format!("{here}.metric"),
                format!("expected an object of labels, got {}", kind(other)),
            ))
        }
    }
    let here = format!("{here} {labels}");
    let values = match entry.get("values") {
        Some(Value::Array(values)) => values.as_slice(),
        // A series with only native-histogram samples has no float values.
        None if entry.contains_key("histograms") => &[],
        Some(other) => {
            return Err(json_err(
                &format!("{here} values"),
                format!(
                    "expected an array of [time, \"value\"] pairs, got {}",
                    kind(other)
                ),
            ))
        }
        None => {
            return Err(json_err(
                &here,
                "missing \"values\"; expected an array of [time, \"value\"] pairs",
            ))
        }
    };
    let mut samples = Vec::with_capacity(values.len());
    for (j, pair) in values.iter().enumerate() {
        samples.push(read_pair(&here, j, pair)?);
    }
    Ok(RawSeries::new(labels, samples))
}

/// Reads one `[<unix seconds>, "<value>"]` pair.
fn read_pair(series: &str, j: usize, pair: &Value) -> Result<Sample> {
    let at = format!("{series} values[{j}]");
    let expected = "expected a [<unix seconds>, \"<value>\"] pair";
    let Some([t, v]) = pair
        .as_array()
        .map(Vec::as_slice)
        .and_then(|a| <&[Value; 2]>::try_from(a).ok())
    else {
        return Err(json_err(&at, format!("{expected}, got {pair}")));
    };
    let secs = match t {
        Value::Number(n) => n.as_f64(),
        // Some proxies quote the timestamp too.
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    let Some(secs) = secs else {
        return Err(json_err(
            &at,
            format!("bad timestamp {t}: expected unix seconds as a number"),
        ));
    };
    let ts_ms = super::seconds_to_ms(secs, &t.to_string()).map_err(|m| json_err(&at, m))?;
    let at = format!("{at} (t={t})");
    let value = match v {
        Value::String(s) => super::parse_value(s).map_err(|m| json_err(&at, m))?,
        Value::Number(n) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| json_err(&at, format!("bad number {n}: expected a finite number")))?,
        other => {
            return Err(json_err(
                &at,
                format!("bad value {other}: expected a number in a string, like \"1.5\""),
            ))
        }
    };
    Ok(Sample { ts_ms, value })
}

fn json_err(location: &str, message: impl Into<String>) -> Error {
    Error::Json {
        location: location.to_string(),
        message: message.into(),
    }
}

/// The JSON type of a value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SERIES: &str = r#"{
      "status": "success",
      "data": {
        "resultType": "matrix",
        "result": [
          {"metric": {"__name__": "http_requests", "job": "api", "instance": "a:9090"},
           "values": [[1700000000, "1"], [1700000015.5, "2.5"], [1700000030, "3e2"]]},
          {"metric": {"job": "db"},
           "values": [[1700000030, "7"], [1700000000, "5"]]}
        ]
      }
    }"#;

    fn json_error(text: &str) -> (String, String) {
        match read_prom_json(text) {
            Err(Error::Json { location, message }) => (location, message),
            other => panic!("expected a JSON error for {text}, got {other:?}"),
        }
    }

    #[test]
    fn reads_several_labelled_series() {
        let series = read_prom_json(TWO_SERIES).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].labels["__name__"], "http_requests");
        assert_eq!(series[0].labels["instance"], "a:9090");
        assert_eq!(
            series[0].samples,
            vec![
                Sample {
                    ts_ms: 1_700_000_000_000,
                    value: 1.0
                },
                Sample {
                    ts_ms: 1_700_000_015_500,
                    value: 2.5
                },
                Sample {
                    ts_ms: 1_700_000_030_000,
                    value: 300.0
                },
            ]
        );
        assert_eq!(series[1].labels.len(), 1);
        assert_eq!(series[1].samples[0].value, 5.0);
        assert!(series[1].report.was_unsorted());
    }

    #[test]
    fn accepts_the_bare_data_object() {
        let data = r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}"#;
        let series = read_prom_json(data).unwrap();
        assert_eq!(
            series[0].samples,
            vec![Sample {
                ts_ms: 1000,
                value: 1.0
            }]
        );
        assert!(read_prom_json(r#"{"resultType":"matrix","result":[]}"#)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn carries_prometheus_errors() {
        let text = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        match read_prom_json(text) {
            Err(e @ Error::Prometheus { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("bad_data") && msg.contains("parse error at char 4"),
                    "{msg}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_wrong_result_type() {
        let (loc, msg) =
            json_error(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#);
        assert_eq!(loc, "data.resultType");
        assert!(
            msg.contains("\"matrix\"") && msg.contains("vector"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_non_finite_values_naming_series_and_time() {
        for bad in ["NaN", "+Inf", "-Inf"] {
            let text = format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[
                {{"metric":{{"job":"ok"}},"values":[[1,"1"]]}},
                {{"metric":{{"__name__":"up","job":"api"}},"values":[[1,"1"],[1700000060,"{bad}"]]}}]}}}}"#
            );
            let (loc, msg) = json_error(&text);
            assert!(
                loc.contains("result[1]") && loc.contains("up{job=\"api\"}"),
                "{loc}"
            );
            assert!(loc.contains("t=1700000060"), "{loc}");
            assert!(msg.contains("non-finite"), "{msg}");
        }
    }

    #[test]
    fn rejects_malformed_entries_naming_them() {
        let wrap = |result: &str| {
            format!(r#"{{"status":"success","data":{{"resultType":"matrix","result":{result}}}}}"#)
        };
        let (loc, msg) = json_error(&wrap(r#"[{"metric":{},"values":[[1,"x"]]}]"#));
        assert!(loc.contains("values[0]"), "{loc}");
        assert!(msg.contains("bad number"), "{msg}");
        let (loc, msg) = json_error(&wrap(r#"[{"metric":{},"values":[[1,"1"],[2]]}]"#));
        assert!(loc.contains("values[1]"), "{loc}");
        assert!(msg.contains("pair"), "{msg}");
        let (loc, msg) = json_error(&wrap(r#"[{"metric":{},"values":[["soon","1"]]}]"#));
        assert!(loc.contains("values[0]"), "{loc}");
        assert!(msg.contains("bad timestamp"), "{msg}");
        let (loc, _) = json_error(&wrap(r#"[{"metric":{"a":1},"values":[]}]"#));
        assert_eq!(loc, "data.result[0].metric.a");
        let (loc, _) = json_error(&wrap(r#"[{"metric":{}}]"#));
        assert!(loc.starts_with("data.result[0]"), "{loc}");
        let (loc, _) = json_error(&wrap(r#"{}"#));
        assert_eq!(loc, "data.result");
        let (loc, _) = json_error(r#"{"status":"success"}"#);
        assert_eq!(loc, "data");
        let (loc, _) = json_error(r#"{"status":"pending","data":{}}"#);
        assert_eq!(loc, "status");
        let (loc, _) = json_error(r#"[1,2]"#);
        assert_eq!(loc, "top level");
        let (loc, _) = json_error(r#"{"hello":1}"#);
        assert_eq!(loc, "top level");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        match read_prom_json("{\n  \"status\": \"success\",\n  \"data\": {,}\n}") {
            Err(e @ Error::JsonSyntax { line: 3, .. }) => {
                assert!(e.to_string().starts_with("line 3, column"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
