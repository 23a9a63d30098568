//! Kubernetes name rules shared by the configuration, the API's request checks and
//! the label-selector parser.

/// Whether `s` is a lowercase RFC 1123 label: 1 to 63 lowercase alphanumerics or
/// `-`, starting and ending with an alphanumeric (a namespace name, one part of a
/// DNS subdomain).
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::is_dns_label;

    #[test]
    fn dns_labels() {
        for ok in ["a", "prescale", "kube-system", "a1", &"x".repeat(63)] {
            assert!(is_dns_label(ok), "{ok:?}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
    }
}
