//! JSON checks shared by the command-line tests.

/// Keys of a JSON document that are not snake_case: prescale's own JSON (every
/// `--json`, `/debug/signals`) uses snake_case, as its config does. Label maps hold
/// data, not keys, and are skipped.
pub fn non_snake_keys(v: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k.chars().any(|c| c.is_ascii_uppercase() || c == '-') {
                        out.push(format!("{at}.{k}"));
                    }
                    if k != "labels" {
                        walk(v, &format!("{at}.{k}"), out);
                    }
                }
            }
            serde_json::Value::Array(a) => {
                for v in a {
                    walk(v, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}
