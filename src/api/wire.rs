//! Small pieces of the wire format every handler writes: times as `metav1.Time`
//! writes them, label sets in messages, and percent-decoded path segments.

use super::status::Error;
use crate::series::Labels;

/// Unix milliseconds as RFC 3339 in UTC with seconds precision (what
/// `metav1.Time` writes).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// `{k="v",...}`, for error messages.
pub fn describe(labels: &Labels) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(","))
}

/// Decodes `%XX` escapes; leaves malformed ones as written.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A namespace in a request path: 400 unless it is a lowercase RFC 1123 label. The
/// kube-apiserver only sends namespace names; anything else (`..`, a NUL, a slash
/// decoded from %2F) is a client crafting paths.
pub fn check_namespace(namespace: &str) -> Result<(), Error> {
    if crate::names::is_dns_label(namespace) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "invalid namespace {namespace:?}: must be a lowercase RFC 1123 label"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_labels_and_escapes_are_written_as_kubernetes_does() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20Z");
        let labels: Labels = [("queue".to_string(), "a\"b".to_string())].into();
        assert_eq!(describe(&labels), r#"{queue="a\"b"}"#);
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
