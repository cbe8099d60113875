//! The `Bearer` scheme of an `Authorization` header, as both listeners read it:
//! the scheme name is case-insensitive (RFC 9110, section 11.1).

/// The credentials of a `Bearer` authorization, trimmed; `None` for any other
/// scheme. `Bearer` alone yields an empty token.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, credentials) = header.split_once(' ').unwrap_or((header, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

#[cfg(test)]
mod tests {
    use super::bearer;

    /// The scheme matches in any case; other schemes are not bearer tokens.
    #[test]
    fn the_scheme_is_case_insensitive() {
        for header in ["Bearer t", "bearer t", "BEARER t", "bEaReR  t "] {
            assert_eq!(bearer(header), Some("t"), "{header}");
        }
        assert_eq!(bearer("Bearer"), Some(""));
        assert_eq!(bearer("Basic dTpw"), None);
        assert_eq!(bearer("Bearert"), None);
        assert_eq!(bearer(""), None);
    }
}
