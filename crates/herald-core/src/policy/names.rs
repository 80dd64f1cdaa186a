//! Canary and namespace name filters: exact names, and globs matched without a regular
//! expression when they can be.

use std::collections::BTreeMap;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::{Problem, Reason};

/// Names matched by exact value or glob; an empty filter matches everything.
#[derive(Debug, Default)]
pub(super) struct NameFilter {
    pub(super) exact: Vec<String>,
    pub(super) globs: Vec<String>,
    /// The globs that are plain wildcards, matched directly.
    wildcards: Vec<Wildcard>,
    /// The other globs (classes, alternatives, escapes).
    glob_set: Option<GlobSet>,
}

impl NameFilter {
    pub(super) fn build(
        patterns: &[String],
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> NameFilter {
        let mut filter = NameFilter::default();
        let mut builder = GlobSetBuilder::new();
        let mut complex = false;
        for (i, pattern) in patterns.iter().enumerate() {
            if pattern.is_empty() {
                problems.push(Problem::new(
                    Reason::InvalidSpec,
                    format!("{path}[{i}]"),
                    "must not be empty",
                ));
            } else if !is_glob(pattern) {
                filter.exact.push(pattern.clone());
            } else {
                match Glob::new(pattern) {
                    Ok(glob) => {
                        match Wildcard::new(pattern) {
                            Some(wildcard) => filter.wildcards.push(wildcard),
                            None => {
                                builder.add(glob);
                                complex = true;
                            }
                        }
                        filter.globs.push(pattern.clone());
                    }
                    Err(e) => problems.push(Problem::new(
                        Reason::InvalidSpec,
                        format!("{path}[{i}]"),
                        format!("invalid glob: {}", e.kind()),
                    )),
                }
            }
        }
        if complex {
            filter.glob_set = builder.build().ok();
        }
        filter
    }

    pub(super) fn is_all(&self) -> bool {
        self.exact.is_empty() && self.globs.is_empty()
    }

    pub(super) fn matches(&self, name: &str) -> bool {
        self.is_all()
            || self.exact.iter().any(|e| e == name)
            || self.wildcards.iter().any(|w| w.is_match(name))
            || self.glob_set.as_ref().is_some_and(|set| set.is_match(name))
    }
}

/// A glob of literal characters, `*` and `?` only (what canary and namespace patterns nearly
/// always are), matched without a regular expression. Same answers as globset, which matches
/// bytes: `?` is any one byte, `*` any bytes (newlines and `/` included, as Herald builds its
/// globs with the default options).
#[derive(Debug, Clone)]
pub(super) struct Wildcard(Box<str>);

impl Wildcard {
    /// `None` for a pattern with anything else globset gives a meaning to.
    pub(super) fn new(pattern: &str) -> Option<Wildcard> {
        let plain = !pattern.contains(['[', ']', '{', '}', '\\', '/']) && !pattern.contains("**");
        plain.then(|| Wildcard(pattern.into()))
    }

    /// The literal text before the first wildcard.
    pub(super) fn prefix(&self) -> &str {
        &self.0[..self.0.find(['*', '?']).unwrap_or(self.0.len())]
    }

    /// The literal text after the last wildcard.
    pub(super) fn suffix(&self) -> &str {
        &self.0[self.0.rfind(['*', '?']).map_or(0, |i| i + 1)..]
    }

    pub(super) fn is_match(&self, name: &str) -> bool {
        wildcard_match(self.0.as_bytes(), name.as_bytes())
    }
}

/// Whole-text wildcard matching: `*` any bytes, `?` one byte, the rest literally. Greedy with
/// backtracking to the last `*`, which is complete for these two wildcards.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

pub(super) fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

pub(super) fn labels_match(
    required: &BTreeMap<String, String>,
    actual: Option<&BTreeMap<String, String>>,
) -> bool {
    required.is_empty()
        || actual.is_some_and(|actual| required.iter().all(|(k, v)| actual.get(k) == Some(v)))
}
