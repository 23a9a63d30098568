//! CSV `timestamp,value`: one series per file, the format recorded traces come in.

use std::io;

use super::{
    format_seconds, format_value, parse_timestamp, parse_value, Error, Labels, RawSeries, Result,
    Sample, Series,
};

/// Reads CSV `timestamp,value` lines into one series (with no labels).
///
/// The header line is optional. Timestamps are unix seconds (possibly
/// fractional, rounded to the millisecond) or RFC 3339 times with an offset.
/// Blank lines are skipped; fields may be surrounded by spaces or double quotes.
/// Duplicate timestamps keep the last sample and unsorted input is sorted; both
/// are counted in the returned report.
///
/// # Errors
/// [`Error::Line`] naming the first malformed line: wrong field count, bad
/// timestamp, bad number, or a non-finite value (NaN, Inf).
pub fn read_csv(text: &str) -> Result<RawSeries> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut samples = Vec::new();
    let mut first = true;
    for (i, raw_line) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw_line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let fields: Vec<&str> = trimmed.split(',').map(unquote).collect();
        let is_first = std::mem::replace(&mut first, false);
        if fields.len() != 2 {
            return Err(Error::Line {
                line,
                message: format!(
                    "expected 2 fields `timestamp,value`, found {}",
                    fields.len()
                ),
            });
        }
        // A header is a first line where neither field is data; a first line with
        // one good field is a malformed data line and gets reported as such.
        if is_first && parse_timestamp(fields[0]).is_err() && fields[1].parse::<f64>().is_err() {
            continue;
        }
        let ts_ms = parse_timestamp(fields[0]).map_err(|message| Error::Line { line, message })?;
        let value = parse_value(fields[1]).map_err(|message| Error::Line { line, message })?;
        samples.push(Sample { ts_ms, value });
    }
    Ok(RawSeries::new(Labels::new(), samples))
}

/// Strips surrounding spaces and one pair of surrounding double quotes.
fn unquote(field: &str) -> &str {
    let f = field.trim();
    f.strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .map(str::trim)
        .unwrap_or(f)
}

/// Writes a series as CSV with a `timestamp,value` header, timestamps in unix
/// seconds; gaps are left out, so reading the file back yields the same gaps.
///
/// # Errors
/// [`Error::Write`] when `out` fails.
pub fn write_csv(series: &Series, out: &mut dyn io::Write) -> Result<()> {
    let write = |out: &mut dyn io::Write| -> io::Result<()> {
        writeln!(out, "timestamp,value")?;
        for s in series.to_samples() {
            writeln!(out, "{},{}", format_seconds(s.ts_ms), format_value(s.value))?;
        }
        out.flush()
    };
    write(out).map_err(|source| Error::Write {
        what: "CSV",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_error(text: &str) -> (usize, String) {
        match read_csv(text) {
            Err(Error::Line { line, message }) => (line, message),
            other => panic!("expected a line error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn reads_with_and_without_header() {
        let a = read_csv("timestamp,value\n1700000000,1.5\n1700000300,2\n").unwrap();
        let b = read_csv("1700000000,1.5\r\n\n1700000300,2\r\n").unwrap();
        assert_eq!(a.samples, b.samples);
        assert_eq!(
            a.samples,
            vec![
                Sample {
                    ts_ms: 1_700_000_000_000,
                    value: 1.5
                },
                Sample {
                    ts_ms: 1_700_000_300_000,
                    value: 2.0
                },
            ]
        );
        assert_eq!(a.report.points_in, 2);
        assert!(a.labels.is_empty());
    }

    #[test]
    fn reads_fractional_seconds_rfc3339_and_quotes() {
        let r = read_csv(
            "\u{feff}time,value\n\"1700000000.25\",\"3\"\n2023-11-14T22:13:21+00:00, 4e2 \n",
        )
        .unwrap();
        assert_eq!(
            r.samples[0],
            Sample {
                ts_ms: 1_700_000_000_250,
                value: 3.0
            }
        );
        assert_eq!(
            r.samples[1],
            Sample {
                ts_ms: 1_700_000_001_000,
                value: 400.0
            }
        );
    }

    #[test]
    fn duplicates_last_wins_and_unsorted_is_sorted() {
        let r = read_csv("3,30\n1,10\n2,20\n3,31\n2,21\n").unwrap();
        let values: Vec<f64> = r.samples.iter().map(|s| s.value).collect();
        assert_eq!(values, vec![10.0, 21.0, 31.0]);
        assert_eq!(r.report.points_in, 5);
        assert_eq!(r.report.duplicates, 2);
        assert!(r.report.was_unsorted());
    }

    #[test]
    fn rejects_malformed_lines_naming_them() {
        let (line, msg) = line_error("timestamp,value\n1,2\n2,3,4\n");
        assert_eq!(line, 3);
        assert!(msg.contains("expected 2 fields"), "{msg}");

        let (line, msg) = line_error("1,2\n\nsoon,3\n");
        assert_eq!(line, 3);
        assert!(
            msg.contains("bad timestamp") && msg.contains("unix seconds"),
            "{msg}"
        );

        let (line, msg) = line_error("1,2\n2,lots\n");
        assert_eq!(line, 2);
        assert!(msg.contains("bad number"), "{msg}");

        let (line, msg) = line_error("1,2\n2,\n");
        assert_eq!(line, 2);
        assert!(msg.contains("missing value"), "{msg}");

        let (line, msg) = line_error("1,2\n2,3\n3,NaN\n");
        assert_eq!(line, 3);
        assert!(msg.contains("non-finite"), "{msg}");

        let (line, msg) = line_error("1,inf\n");
        assert_eq!(line, 1);
        assert!(msg.contains("non-finite"), "{msg}");

        let (line, msg) = line_error("1,1e999\n");
        assert_eq!(line, 1);
        assert!(msg.contains("non-finite"), "{msg}");

        let (line, msg) = line_error("timestamp,value\n1700000000000,1\n");
        assert_eq!(line, 2);
        assert!(msg.contains("milliseconds"), "{msg}");

        let (line, msg) = line_error("2023-11-14T22:13:20,1\n");
        assert_eq!(line, 1);
        assert!(msg.contains("RFC 3339"), "{msg}");

        // A first line with one valid field is data, not a header.
        let (line, msg) = line_error("abc,1\n");
        assert_eq!(line, 1);
        assert!(msg.contains("bad timestamp"), "{msg}");

        let (line, _) = line_error("just-one-field\n");
        assert_eq!(line, 1);
    }

    #[test]
    fn empty_input_has_no_samples() {
        assert!(read_csv("").unwrap().samples.is_empty());
        assert!(read_csv("timestamp,value\n").unwrap().samples.is_empty());
    }

    #[test]
    fn writes_and_reads_back() {
        let series = Series {
            start_ms: 1_700_000_000_000,
            step_ms: 500,
            values: vec![1.0, f64::NAN, 0.1, 1e300, -2.5],
        };
        let mut buf = Vec::new();
        write_csv(&series, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.starts_with("timestamp,value\n1700000000,1\n1700000001,0.1\n"),
            "{text}"
        );
        let back = read_csv(&text).unwrap();
        assert_eq!(back.samples, series.to_samples());
    }
}
