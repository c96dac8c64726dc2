//! Glob patterns for token `actions` and `resources`: `*` matches any run of characters
//! (including none), `?` exactly one character, everything else itself. The patterns `*` and
//! `*.*` match every name, so an "all actions" token also covers names without a dot.

/// True when `pattern` matches all of `text`.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    if pattern == "*" || pattern == "*.*" {
        return true;
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Greedy match with one backtrack point (the last `*` seen): linear in practice and never
    // exponential, whatever the pattern.
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
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
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn literal_and_wildcards() {
        assert!(matches("aggregate.read", "aggregate.read"));
        assert!(!matches("aggregate.read", "aggregate.reads"));
        assert!(matches("aggregate.*", "aggregate.append"));
        assert!(!matches("aggregate.*", "schema.read"));
        assert!(matches("*", "tenant.manage"));
        assert!(matches("*.*", "nodot"));
        assert!(matches("schema.????", "schema.read"));
        assert!(!matches("schema.????", "schema.write"));
        assert!(matches("aggregate:order:*", "aggregate:order:o-1"));
        assert!(!matches("aggregate:order:*", "aggregate:orders:o-1"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("**", ""));
        assert!(!matches("?", ""));
        assert!(matches("*:o-1", "aggregate:order:o-1"));
        assert!(!matches("*:o-1", "aggregate:order:o-10"));
    }
}
