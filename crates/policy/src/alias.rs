//! Aliases as a VCS sends them (`sip:Meet.Alice@Example.com;transport=tls`, `h323:1234`,
//! `meet.alice@example.com`) brought to the one form conference aliases are matched against.

/// Schemes a VCS may put in front of an alias.
const SCHEMES: &[&str] = &["sip:", "sips:", "h323:", "tel:"];

/// Drops the scheme, URI parameters (`;…`) and headers (`?…`), and lower-cases the result:
/// VCS aliases are matched without regard to case, as its own search rules do.
pub fn normalise(raw: &str) -> std::borrow::Cow<'_, str> {
    let mut alias = raw.trim();
    for scheme in SCHEMES {
        // `get`, not indexing: a non-ASCII alias may have no character boundary there.
        if alias.get(..scheme.len()).is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme)) {
            alias = &alias[scheme.len()..];
            break;
        }
    }
    let end = alias.find([';', '?']).unwrap_or(alias.len());
    let alias = alias[..end].trim();
    // Most aliases are lower case already: those are borrowed, not copied. A character
    // counts as changing if lower-casing it alone does (title case too, not only upper).
    let changes = |c: char| {
        if c.is_ascii() { c.is_ascii_uppercase() } else { !c.to_lowercase().eq([c]) }
    };
    if alias.chars().any(changes) {
        std::borrow::Cow::Owned(alias.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(alias)
    }
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn aliases_arrive_in_many_spellings_and_match_as_one() {
        for raw in [
            "meet.alice@example.com",
            "sip:meet.alice@example.com",
            "SIP:Meet.Alice@Example.COM;transport=tls",
            "sips:meet.alice@example.com?subject=x",
            "  meet.alice@example.com ",
        ] {
            assert_eq!(normalise(raw), "meet.alice@example.com", "{raw}");
        }
        assert_eq!(normalise("h323:1234"), "1234");
        assert_eq!(normalise("tel:+4712345678"), "+4712345678");
        assert_eq!(normalise(""), "");
    }

    // Goal: an alias whose first characters are not ASCII is normalised, not a panic of the
    // policy service (a character straddled the length of a scheme).
    #[test]
    fn non_ascii_aliases_do_not_panic() {
        assert_eq!(normalise("éééé@example.com"), "éééé@example.com");
        assert_eq!(normalise("SIP:Ünïcode@Example.com"), "ünïcode@example.com");
        assert_eq!(normalise("ab€"), "ab€");
        // Title case (U+01C5) is not upper case, yet lower-cases to U+01C6.
        assert_eq!(normalise("\u{1c5}@example.com"), "\u{1c6}@example.com");
    }
}
