//! Kubernetes label selectors, as the HPA sends them in `labelSelector`.
//!
//! The full set-based syntax is understood: `key=value`, `key==value`,
//! `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`, `!key`, joined by
//! commas (a logical AND). Keys and values are validated with Kubernetes' own
//! rules so that a selector we accept means the same thing to us as it does to
//! `kubectl`.

use std::collections::BTreeSet;

use crate::series::Labels;

/// Why a selector could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A token appeared where something else was required.
    #[error("at position {position}: expected {expected}, found {found}")]
    Unexpected {
        /// Byte offset of the offending token.
        position: usize,
        /// What the grammar allows here.
        expected: &'static str,
        /// What was there instead.
        found: String,
    },
    /// A label key breaks Kubernetes' naming rules.
    #[error("invalid label key {key:?}: {why}")]
    InvalidKey {
        /// The key as written.
        key: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// A label value breaks Kubernetes' naming rules.
    #[error("invalid label value {value:?} for key {key:?}: {why}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The value as written.
        value: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// `in` / `notin` with an empty set.
    #[error("key {0:?}: the value set of 'in' and 'notin' must not be empty")]
    EmptySet(String),
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What one requirement asks of a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `key=v` / `key==v`: the label exists and equals `v`.
    Equals(String),
    /// `key!=v`: the label is absent or differs from `v`.
    NotEquals(String),
    /// `key in (..)`: the label exists and is one of the set.
    In(BTreeSet<String>),
    /// `key notin (..)`: the label is absent or none of the set.
    NotIn(BTreeSet<String>),
    /// `key`: the label exists.
    Exists,
    /// `!key`: the label does not exist.
    DoesNotExist,
}

/// One comma-separated part of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The condition on its value.
    pub op: Op,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Op::Equals(v) => value == Some(v),
            Op::NotEquals(v) => value != Some(v),
            Op::In(set) => value.is_some_and(|x| set.contains(x)),
            Op::NotIn(set) => value.is_none_or(|x| !set.contains(x)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }
}

/// A parsed label selector; the empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// All must hold.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl std::str::FromStr for Selector {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Open,
    Close,
    Comma,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(w) => format!("{w:?}"),
            Token::Not => "'!'".into(),
            Token::Eq => "'='".into(),
            Token::DoubleEq => "'=='".into(),
            Token::NotEq => "'!='".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::Comma => "','".into(),
            Token::End => "end of selector".into(),
        }
    }
}

/// Splits a selector into tokens with their byte offsets; words run until
/// whitespace or one of `,=!()`.
fn lex(input: &str) -> Result<Vec<(usize, Token)>> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' => {
                chars.next();
                tokens.push((i, Token::Comma));
            }
            '(' => {
                chars.next();
                tokens.push((i, Token::Open));
            }
            ')' => {
                chars.next();
                tokens.push((i, Token::Close));
            }
            '=' => {
                chars.next();
                if chars.peek().is_some_and(|&(_, c)| c == '=') {
                    chars.next();
                    tokens.push((i, Token::DoubleEq));
                } else {
                    tokens.push((i, Token::Eq));
                }
            }
            '!' => {
                chars.next();
                if chars.peek().is_some_and(|&(_, c)| c == '=') {
                    chars.next();
                    tokens.push((i, Token::NotEq));
                } else {
                    tokens.push((i, Token::Not));
                }
            }
            '<' | '>' => {
                return Err(Error::Unexpected {
                    position: i,
                    expected: "one of '=', '==', '!=', 'in', 'notin' (numeric comparisons are not supported)",
                    found: format!("'{c}'"),
                });
            }
            _ => {
                let start = i;
                let mut end = input.len();
                while let Some(&(j, c)) = chars.peek() {
                    if c.is_whitespace() || ",=!()<>".contains(c) {
                        end = j;
                        break;
                    }
                    chars.next();
                }
                tokens.push((start, Token::Word(input[start..end].to_string())));
            }
        }
    }
    tokens.push((input.len(), Token::End));
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.at).map_or(&Token::End, |(_, t)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.at).map_or(0, |(p, _)| *p)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        t
    }

    fn unexpected(&self, expected: &'static str) -> Error {
        Error::Unexpected {
            position: self.position(),
            expected,
            found: self.peek().describe(),
        }
    }

    fn key(&mut self) -> Result<String> {
        match self.peek().clone() {
            Token::Word(w) => {
                self.next();
                validate_key(&w)?;
                Ok(w)
            }
            _ => Err(self.unexpected("a label key")),
        }
    }

    /// A value after `=`, `==` or `!=`; an empty value (`key=`) is allowed, as in
    /// Kubernetes.
    fn value(&mut self, key: &str) -> Result<String> {
        match self.peek().clone() {
            Token::Word(w) => {
                self.next();
                validate_value(key, &w)?;
                Ok(w)
            }
            Token::Comma | Token::End => Ok(String::new()),
            _ => Err(self.unexpected("a label value")),
        }
    }

    fn set(&mut self, key: &str) -> Result<BTreeSet<String>> {
        if *self.peek() != Token::Open {
            return Err(self.unexpected("'(' to open the value set"));
        }
        self.next();
        let mut set = BTreeSet::new();
        if *self.peek() == Token::Close {
            self.next();
            return Err(Error::EmptySet(key.to_string()));
        }
        loop {
            match self.peek().clone() {
                Token::Word(w) => {
                    self.next();
                    validate_value(key, &w)?;
                    set.insert(w);
                }
                // `in (a,)` means `a` or the empty value, as in Kubernetes.
                Token::Comma | Token::Close => {
                    set.insert(String::new());
                }
                _ => return Err(self.unexpected("a label value")),
            }
            match self.peek() {
                Token::Comma => self.next(),
                Token::Close => {
                    self.next();
                    break;
                }
                _ => return Err(self.unexpected("',' or ')'")),
            };
        }
        Ok(set)
    }

    fn requirement(&mut self) -> Result<Requirement> {
        if *self.peek() == Token::Not {
            self.next();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        let key = self.key()?;
        let op = match self.peek().clone() {
            Token::Comma | Token::End => Op::Exists,
            Token::Eq | Token::DoubleEq => {
                self.next();
                Op::Equals(self.value(&key)?)
            }
            Token::NotEq => {
                self.next();
                Op::NotEquals(self.value(&key)?)
            }
            Token::Word(w) if w == "in" => {
                self.next();
                Op::In(self.set(&key)?)
            }
            Token::Word(w) if w == "notin" => {
                self.next();
                Op::NotIn(self.set(&key)?)
            }
            _ => {
                return Err(self.unexpected("one of '=', '==', '!=', 'in', 'notin', ',' or the end"))
            }
        };
        Ok(Requirement { key, op })
    }
}

/// Parses a label selector.
///
/// # Errors
/// An [`Error`] that names the position and what was expected, or the key or
/// value that breaks Kubernetes' naming rules.
pub fn parse(input: &str) -> Result<Selector> {
    let tokens = lex(input)?;
    let mut parser = Parser { tokens, at: 0 };
    let mut requirements = Vec::new();
    if *parser.peek() == Token::End {
        return Ok(Selector { requirements });
    }
    loop {
        requirements.push(parser.requirement()?);
        match parser.peek() {
            Token::Comma => parser.next(),
            Token::End => break,
            _ => return Err(parser.unexpected("',' or the end of the selector")),
        };
    }
    Ok(Selector { requirements })
}

/// The rules of a label name and of a label value: at most 63 characters,
/// alphanumerics with `-`, `_`, `.` inside, alphanumeric at both ends.
fn check_name(s: &str) -> std::result::Result<(), &'static str> {
    if s.len() > 63 {
        return Err("must be at most 63 characters");
    }
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
    {
        return Err("may only contain alphanumerics, '-', '_' and '.'");
    }
    let edge_ok = |b: Option<&u8>| b.is_none_or(|b| b.is_ascii_alphanumeric());
    if !edge_ok(bytes.first()) || !edge_ok(bytes.last()) {
        return Err("must begin and end with an alphanumeric character");
    }
    Ok(())
}

/// A key is `[prefix/]name`: the prefix a DNS subdomain, the name a label name.
fn validate_key(key: &str) -> Result<()> {
    let invalid = |why| Error::InvalidKey {
        key: key.to_string(),
        why,
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.is_empty() {
        return Err(invalid("the name part must not be empty"));
    }
    check_name(name).map_err(invalid)?;
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 {
            return Err(invalid(
                "the prefix must be a DNS subdomain of 1 to 253 characters",
            ));
        }
        if !prefix.split('.').all(crate::names::is_dns_label) {
            return Err(invalid(
                "the prefix must be a DNS subdomain (lowercase alphanumerics, '-' and '.')",
            ));
        }
    }
    Ok(())
}

fn validate_value(key: &str, value: &str) -> Result<()> {
    check_name(value).map_err(|why| Error::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_selects_everything() {
        let s = parse("").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[("a", "b")])));
        assert!(parse("   ").unwrap().is_empty());
    }

    #[test]
    fn every_operator_parses() {
        let s = parse("a=1, b==2,c!=3,d in (x, y),e notin (z),f,!g").unwrap();
        let ops: Vec<_> = s
            .requirements
            .iter()
            .map(|r| (r.key.as_str(), r.op.clone()))
            .collect();
        assert_eq!(
            ops,
            vec![
                ("a", Op::Equals("1".into())),
                ("b", Op::Equals("2".into())),
                ("c", Op::NotEquals("3".into())),
                ("d", Op::In(set(&["x", "y"]))),
                ("e", Op::NotIn(set(&["z"]))),
                ("f", Op::Exists),
                ("g", Op::DoesNotExist),
            ]
        );
    }

    #[test]
    fn matching_follows_kubernetes_semantics() {
        let l = labels(&[("queue", "orders"), ("env", "prod")]);
        let yes = [
            "queue=orders",
            "queue==orders",
            "queue!=payments",
            "missing!=x",
            "queue in (orders,payments)",
            "queue notin (payments)",
            "missing notin (x)",
            "queue",
            "!missing",
            "queue=orders,env=prod",
            "",
        ];
        let no = [
            "queue=payments",
            "missing=x",
            "queue!=orders",
            "queue in (payments)",
            "missing in (x)",
            "queue notin (orders)",
            "missing",
            "!queue",
            "queue=orders,env=dev",
        ];
        for s in yes {
            assert!(parse(s).unwrap().matches(&l), "{s} should match");
        }
        for s in no {
            assert!(!parse(s).unwrap().matches(&l), "{s} should not match");
        }
    }

    #[test]
    fn empty_values_are_allowed_where_kubernetes_allows_them() {
        let s = parse("a=").unwrap();
        assert_eq!(s.requirements[0].op, Op::Equals(String::new()));
        assert!(s.matches(&labels(&[("a", "")])));
        let s = parse("a in (x,)").unwrap();
        assert_eq!(s.requirements[0].op, Op::In(set(&["x", ""])));
    }

    #[test]
    fn prefixed_keys_are_accepted() {
        let s = parse("app.kubernetes.io/name=web").unwrap();
        assert_eq!(s.requirements[0].key, "app.kubernetes.io/name");
    }

    #[test]
    fn bad_selectors_say_why() {
        let cases = [
            ("a in ()", "must not be empty"),
            ("a in x", "'(' to open the value set"),
            ("a in (x", "',' or ')'"),
            ("a b", "one of '=', '==', '!=', 'in', 'notin'"),
            ("=x", "a label key"),
            ("a=b=c", "',' or the end"),
            ("a>1", "numeric comparisons are not supported"),
            ("a,", "a label key"),
            ("-a=b", "alphanumeric"),
            ("a=b c", "',' or the end"),
            ("a=-b", "invalid label value"),
            ("Bad_Prefix/a=b", "DNS subdomain"),
            ("/a", "DNS subdomain"),
            ("p/=x", "name part must not be empty"),
            ("a!", "one of '='"),
            ("a=\u{e9}", "may only contain"),
        ];
        for (input, want) in cases {
            let err = parse(input).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{input:?}: {err:?} should contain {want:?}"
            );
        }
        let long = "k".repeat(64);
        assert!(parse(&long).unwrap_err().to_string().contains("63"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(input in "\\PC{0,40}") {
            let _ = parse(&input);
        }

        #[test]
        fn parsing_selector_alphabet_never_panics(input in "[a-z0-9=!(), ./_-]{0,40}|(in|notin|[a-c]|[!=(),]| )*") {
            let _ = parse(&input);
        }

        #[test]
        fn equality_selectors_match_their_own_labels(
            k in "[a-z][a-z0-9]{0,10}", v in "[a-z0-9]{1,10}"
        ) {
            let s = parse(&format!("{k}={v}")).unwrap();
            prop_assert!(s.matches(&labels(&[(&k, &v)])));
            let s = parse(&format!("{k}!={v}")).unwrap();
            prop_assert!(!s.matches(&labels(&[(&k, &v)])));
        }
    }
}
