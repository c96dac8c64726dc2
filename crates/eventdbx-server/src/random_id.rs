//! The server's one source of random identifiers: token ids (`jti`) and the suffix of a schema
//! version id that collided a hundred times.

/// A random (version 4) UUID in its hyphenated lower-case form, e.g.
/// `1b4e28ba-2fa1-4d2b-883f-0016d3cca427`; an error when the system's random source fails.
pub(crate) fn uuid_v4() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::uuid_v4;

    #[test]
    fn uuids_are_hyphenated_lower_case_version_4_and_differ() {
        let first = uuid_v4().expect("random source");
        assert_eq!(first.len(), 36);
        assert_eq!(
            first
                .char_indices()
                .filter(|&(_, c)| c == '-')
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
            [8, 13, 18, 23]
        );
        assert!(first
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_eq!(first.as_bytes()[14], b'4');
        assert!(matches!(first.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(first, uuid_v4().expect("random source"));
    }
}
