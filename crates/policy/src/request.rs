//! The VCS's request: one form-encoded body of upper-case parameters (see
//! `../shared/docs/vcs-policy-and-bridges.md` §1.3). Unknown parameters are ignored, as a newer
//! VCS may send more.

use std::borrow::Cow;

/// Larger bodies are refused before parsing; a real request is well under 2 KiB.
pub const REQUEST_BYTES_MAX: usize = 16 * 1024;
/// Longest parameter value kept.
pub const VALUE_BYTES_MAX: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PolicyType {
    Registration,
    Search,
    /// Call Policy.
    Admin,
    User,
}

/// The values are borrowed from the body unless they had to be decoded: a call's parameters
/// cost no allocation of their own.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PolicyRequest<'body> {
    pub policy_type: PolicyType,
    pub destination_alias: Option<Cow<'body, str>>,
    /// `SOURCE_ALIAS`: who calls. No rule decides on it today; explanations show it.
    pub source_alias: Option<Cow<'body, str>>,
    pub protocol: Option<Cow<'body, str>>,
    pub source_ip: Option<Cow<'body, str>>,
    /// `GLOBAL_CALL-SERIAL_NUMBER`, for the logs.
    pub call_serial: Option<Cow<'body, str>>,
    pub method: Option<Cow<'body, str>>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request body of {size_bytes} bytes exceeds {REQUEST_BYTES_MAX}")]
    TooLarge { size_bytes: usize },
    #[error("request body is not form-encoded UTF-8")]
    NotForm,
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("parameter {name} has an unknown value {value:?}")]
    BadValue { name: &'static str, value: String },
    #[error("parameter {0} is longer than {VALUE_BYTES_MAX} bytes")]
    ValueTooLong(String),
}

impl<'a> PolicyRequest<'a> {
    /// A SIP INVITE to `destination` as a search rule asks about it: what an explanation
    /// decides on.
    pub fn invite(destination: &'a str, source: Option<&'a str>) -> PolicyRequest<'a> {
        PolicyRequest {
            policy_type: PolicyType::Search,
            destination_alias: Some(Cow::Borrowed(destination)),
            source_alias: source.map(Cow::Borrowed),
            protocol: Some(Cow::Borrowed("SIP")),
            source_ip: None,
            call_serial: None,
            method: Some(Cow::Borrowed("INVITE")),
        }
    }
}

/// The parameters kept, by their place in a [`Fields`].
const KEPT: [&str; 7] = [
    "POLICY_TYPE",
    "DESTINATION_ALIAS",
    "SOURCE_ALIAS",
    "PROTOCOL",
    "SOURCE_IP",
    "GLOBAL_CALL-SERIAL_NUMBER",
    "METHOD",
];

/// The kept parameters' values, the last one of each name winning, borrowed from the body
/// unless they had to be decoded.
type Fields<'body> = [Option<Cow<'body, str>>; KEPT.len()];

pub fn parse(body: &[u8]) -> Result<PolicyRequest<'_>, RequestError> {
    if body.len() > REQUEST_BYTES_MAX {
        return Err(RequestError::TooLarge { size_bytes: body.len() });
    }
    let text = std::str::from_utf8(body).map_err(|_| RequestError::NotForm)?;
    let mut form = Form { text, fields: Default::default(), pair: Pair::from(0) };
    for_each_separator_and_escape(body, |at| form.read(at))?;
    form.close_pair(body.len())?; // the body's end closes its last pair
    request_of(form.fields)
}

/// A form being read, one separator or escape at a time.
struct Form<'body> {
    text: &'body str,
    fields: Fields<'body>,
    pair: Pair,
}

impl<'body> Form<'body> {
    /// Reads the `&`, `=`, `+` or `%` at `at`. An escape is checked here, where it is found,
    /// and counted, so that a value not kept is measured without another pass over it.
    fn read(&mut self, at: usize) -> Result<(), RequestError> {
        let bytes = self.text.as_bytes();
        let pair = &mut self.pair;
        match bytes[at] {
            b'&' => return self.close_pair(at),
            b'=' if pair.name_end.is_none() => pair.name_end = Some(at),
            b'+' | b'%' if pair.name_end.is_none() => pair.name_escaped = true,
            b'+' => pair.value_escaped = true,
            b'%' => {
                // As `decode` reads an escape: both digits taken, then checked.
                let digit = |offset| bytes.get(at + offset).copied().and_then(hex_value);
                let (Some(high), Some(_)) = (digit(1), digit(2)) else {
                    return Err(RequestError::NotForm);
                };
                pair.value_escaped = true;
                pair.value_escape_count += 1;
                pair.value_above_ascii |= high >= 8;
            }
            _ => {} // a second `=`: part of the value (the scan finds no other byte)
        }
        Ok(())
    }

    /// Keeps the pair ending at `end` (an empty one is none) and starts the next after it.
    fn close_pair(&mut self, end: usize) -> Result<(), RequestError> {
        let pair = std::mem::replace(&mut self.pair, Pair::from(end + 1));
        if end == pair.start {
            return Ok(());
        }
        // Split at ASCII bytes: every slice is on character boundaries.
        let name_end = pair.name_end.unwrap_or(end);
        let name = &self.text[pair.start..name_end];
        let name = if pair.name_escaped { decode(name, true)? } else { Cow::Borrowed(name) };
        let value = self.text.get(name_end + 1..end).unwrap_or("");
        keep(&mut self.fields, name, value, &pair)
    }
}

/// The pair being read: where it starts, where its name ends (at its first `=`), which of its
/// parts hold an escape, and its value's `%XX` escapes (how many, each checked to be whole, and
/// whether one is of a byte over ASCII).
struct Pair {
    start: usize,
    name_end: Option<usize>,
    name_escaped: bool,
    value_escaped: bool,
    value_escape_count: usize,
    value_above_ascii: bool,
}

impl From<usize> for Pair {
    fn from(start: usize) -> Pair {
        Pair {
            start,
            name_end: None,
            name_escaped: false,
            value_escaped: false,
            value_escape_count: 0,
            value_above_ascii: false,
        }
    }
}

/// Calls `read` with where `body` holds `&`, `=`, `+` or `%`, in order, until it fails. A VCS
/// sends some twenty parameters with every call: eight bytes are compared with the four at
/// once, in a word (SWAR), rather than each pair searched for each (a search per pair cost
/// more to start than to run: 20% more time per parse of a VCS's form than this). The places
/// are handed to `read` from the loop, not yielded by an iterator: the iterator's layers cost
/// an eighth of the parse's instructions.
fn for_each_separator_and_escape<E>(
    body: &[u8],
    mut read: impl FnMut(usize) -> Result<(), E>,
) -> Result<(), E> {
    let chunks = body.chunks_exact(8);
    let mut tail = [0; 8]; // zero bytes are none of the four
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    let words = chunks.map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
    for (index, word) in words.chain([u64::from_le_bytes(tail)]).enumerate() {
        let mut found = separator_and_escape_bytes(word);
        while found != 0 {
            read(index * 8 + found.trailing_zeros() as usize / 8)?;
            found &= found - 1;
        }
    }
    Ok(())
}

/// The top bit of each byte of `word` that is `&`, `=`, `+` or `%`.
fn separator_and_escape_bytes(word: u64) -> u64 {
    [b'&', b'=', b'+', b'%']
        .into_iter()
        .fold(0, |found, byte| found | zero_bytes(word ^ u64::from_le_bytes([byte; 8])))
}

/// The top bit of each byte of `word` that is zero, and no other bit: the low seven bits of a
/// byte plus 0x7F carry into its top bit unless all zero (and never into the next byte).
fn zero_bytes(word: u64) -> u64 {
    const LOW_SEVEN: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    !(((word & LOW_SEVEN).wrapping_add(LOW_SEVEN)) | word | LOW_SEVEN)
}

/// Keeps the decoded `value` of a parameter (its `name` decoded) in `fields` if it is one of
/// [`KEPT`]. Every value is bounded as decoding it would be, kept or not. Only a kept one is
/// decoded (copied, when escaped): a VCS escapes the `@` of every alias it sends, and most of
/// them are not kept. One that is not is measured by its escapes (`pair`, whose escapes were
/// checked as they were read), unless one is of a byte over ASCII: only decoding tells whether
/// the bytes make UTF-8.
fn keep<'body>(
    fields: &mut Fields<'body>,
    name: Cow<'body, str>,
    value: &'body str,
    pair: &Pair,
) -> Result<(), RequestError> {
    let bounded = |length_bytes: usize| {
        if length_bytes > VALUE_BYTES_MAX {
            Err(RequestError::ValueTooLong(name.to_string()))
        } else {
            Ok(())
        }
    };
    match KEPT.iter().position(|kept| *kept == name) {
        Some(index) => {
            let value = decode(value, pair.value_escaped)?;
            bounded(value.len())?;
            fields[index] = Some(value);
        }
        None if pair.value_above_ascii => bounded(decode(value, true)?.len())?,
        None => bounded(value.len() - 2 * pair.value_escape_count)?,
    }
    Ok(())
}

/// The request the kept parameters make: a known `POLICY_TYPE` is required, and an empty value
/// is no value.
fn request_of(fields: Fields<'_>) -> Result<PolicyRequest<'_>, RequestError> {
    let [policy_type, destination, source, protocol, source_ip, call_serial, method] = fields;
    let policy_type = match policy_type.as_deref() {
        Some("REGISTRATION") => PolicyType::Registration,
        Some("SEARCH") => PolicyType::Search,
        Some("ADMIN") => PolicyType::Admin,
        Some("USER") => PolicyType::User,
        Some(other) => {
            return Err(RequestError::BadValue { name: "POLICY_TYPE", value: other.to_owned() });
        }
        None => return Err(RequestError::Missing("POLICY_TYPE")),
    };
    fn given(value: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
        value.filter(|value| !value.is_empty())
    }
    Ok(PolicyRequest {
        policy_type,
        destination_alias: given(destination),
        source_alias: given(source),
        protocol: given(protocol),
        source_ip: given(source_ip),
        call_serial: given(call_serial),
        method: given(method),
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte. Text without
/// either (not `escaped`) is returned as it is.
fn decode(text: &str, escaped: bool) -> Result<Cow<'_, str>, RequestError> {
    if !escaped {
        return Ok(Cow::Borrowed(text));
    }
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let high = input.next().and_then(hex_value);
                let low = input.next().and_then(hex_value);
                match (high, low) {
                    (Some(high), Some(low)) => bytes.push(high << 4 | low),
                    _ => return Err(RequestError::NotForm),
                }
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).map(Cow::Owned).map_err(|_| RequestError::NotForm)
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vcs_search_request_is_read() {
        let body = b"AUTHENTICATED=TRUE&CLUSTER_NAME=vcs.example.com\
            &DESTINATION_ALIAS=meet.alice%40example.com&GLOBAL_CALL-SERIAL_NUMBER=3f6c\
            &METHOD=INVITE&POLICY_TYPE=SEARCH&PROTOCOL=SIP&SOURCE_IP=10.1.1.20&UTCTIME=x+y";
        let request = parse(body).expect("parses");
        assert_eq!(request.policy_type, PolicyType::Search);
        assert_eq!(request.destination_alias.as_deref(), Some("meet.alice@example.com"));
        assert_eq!(request.call_serial.as_deref(), Some("3f6c"));
        assert_eq!(request.protocol.as_deref(), Some("SIP"));
        // Only what had to be decoded is copied.
        assert!(matches!(request.destination_alias, Some(Cow::Owned(_))));
        assert!(matches!(request.call_serial, Some(Cow::Borrowed(_))));
        assert!(matches!(request.method, Some(Cow::Borrowed(_))));
    }

    // Goal: a repeated parameter takes its last value (as before, and as form decoders do);
    // encoded and plain values read alike; an empty value is no value.
    #[test]
    fn the_last_value_of_a_repeated_parameter_counts() {
        let body = b"POLICY_TYPE=SEARCH&PROTOCOL=SIP&SOURCE_ALIAS=&PROTOCOL=H323\
            &DESTINATION_ALIAS=meet+room%2B1";
        let request = parse(body).expect("parses");
        assert_eq!(request.protocol.as_deref(), Some("H323"));
        assert_eq!(request.destination_alias.as_deref(), Some("meet room+1"));
        assert_eq!(request.source_alias, None);
    }

    // Goal: each escape is decoded in the part it is in (a name or a value, of its own pair),
    // and only a part holding one is copied.
    #[test]
    fn escapes_are_decoded_where_they_are() {
        let body = b"SOURCE+ALIAS=x&SOURCE_ALIAS=a%2Bb&PROTOCOL%3D=SIP&METHOD&X%41\
            &POLICY_TYPE=SEARCH&DESTINATION_ALIAS=room+1&GLOBAL_CALL-SERIAL_NUMBER=7";
        let request = parse(body).expect("parses");
        assert_eq!(request.source_alias.as_deref(), Some("a+b"));
        assert_eq!(request.protocol, None, "a name `PROTOCOL=` is not PROTOCOL");
        assert_eq!(request.method, None);
        assert_eq!(request.destination_alias.as_deref(), Some("room 1"));
        assert!(matches!(request.call_serial, Some(Cow::Borrowed("7"))));
        assert!(matches!(request.destination_alias, Some(Cow::Owned(_))));
    }

    /// The parser as it was before the body was searched a word at a time and only kept
    /// values were decoded: each pair split with `str` methods, each part scanned for escapes
    /// and decoded, every value bounded (the request is then made as `parse` makes it).
    fn naive(body: &[u8]) -> Result<PolicyRequest<'_>, RequestError> {
        let text = std::str::from_utf8(body).map_err(|_| RequestError::NotForm)?;
        let mut fields: Fields<'_> = Default::default();
        for pair in text.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let escaped = |part: &str| part.contains(['+', '%']);
            let (name, value) = (decode(name, escaped(name))?, decode(value, escaped(value))?);
            if value.len() > VALUE_BYTES_MAX {
                return Err(RequestError::ValueTooLong(name.into_owned()));
            }
            if let Some(index) = KEPT.iter().position(|kept| *kept == name) {
                fields[index] = Some(value);
            }
        }
        request_of(fields)
    }

    // Goal: over seeded random forms made of the characters that matter (`&`, `=`, `+`, `%`,
    // hex digits, names kept or not), the word-wide search finds the same pairs, parts and
    // escapes as splitting each pair does: the same request, or the same error.
    #[test]
    fn the_word_wide_search_reads_every_form_as_splitting_pairs_does() {
        let long = "a".repeat(VALUE_BYTES_MAX - 8);
        let pieces = [
            "&",
            "=",
            "+",
            "%",
            "%4",
            "%41",
            "%2B",
            "%3D",
            "%26",
            "%zz",
            "%C3%A9",
            "%FF",
            "a",
            "9",
            "=SEARCH",
            "=ADMIN",
            "é",
            &long,
            "POLICY_TYPE",
            "SEARCH",
            "DESTINATION_ALIAS",
            "SOURCE_ALIAS",
            "PROTOCOL",
            "METHOD",
        ];
        let mut rng = model::rng::SeededRng::new(18);
        for _ in 0..20_000 {
            let count = rng.below(12) as usize;
            let body: String =
                (0..count).map(|_| pieces[rng.below(pieces.len() as u64) as usize]).collect();
            let expected = naive(body.as_bytes());
            assert_eq!(parse(body.as_bytes()), expected, "{body:?}");
        }
    }

    // Goal: a value that is not kept is measured as decoding it would measure it, or refused
    // as decoding it would refuse it, whatever its escapes (one cut short by the pair's or the
    // body's end, one escaping `%`, a byte over ASCII alone or in a character), and the length
    // bound counts decoded bytes.
    #[test]
    fn a_value_not_kept_is_measured_as_decoding_it_would() {
        let near_bound = format!("{}%41%41%41", "a".repeat(VALUE_BYTES_MAX - 2));
        let values =
            ["", "a", "%", "%4", "%%41", "%41", "%é", "%FF", "%C3%A9", "%C3", "a+b", &near_bound];
        for value in values {
            for form in [
                format!("POLICY_TYPE=SEARCH&UNKEPT={value}"),
                format!("UNKEPT={value}&POLICY_TYPE=SEARCH"),
                format!("UNKEPT={value}=x%41&POLICY_TYPE=SEARCH"),
            ] {
                assert_eq!(parse(form.as_bytes()), naive(form.as_bytes()), "{form:?}");
            }
        }
        let form = format!("POLICY_TYPE=SEARCH&UNKEPT={near_bound}");
        assert_eq!(parse(form.as_bytes()), Err(RequestError::ValueTooLong("UNKEPT".to_owned())));
        let form = format!("POLICY_TYPE=SEARCH&UNKEPT={}%41", "a".repeat(VALUE_BYTES_MAX - 1));
        assert!(parse(form.as_bytes()).is_ok(), "1,024 bytes once decoded");
    }

    // Goal: the word-wide search finds the four bytes a form is split and unescaped at, and
    // only them, wherever they are in a word or the tail after the last whole word: every
    // byte value (those differing from one of the four by the top bit included) at every
    // place in bodies of 0 to 17 bytes, and seeded bodies of any bytes.
    #[test]
    fn the_word_wide_search_finds_the_separators_and_escapes_bytewise() {
        let special = |byte: &u8| matches!(byte, b'&' | b'=' | b'+' | b'%');
        let found_in = |body: &[u8]| {
            let mut found = Vec::new();
            let read = |at| {
                found.push(at);
                Ok::<_, ()>(())
            };
            assert_eq!(for_each_separator_and_escape(body, read), Ok(()));
            found
        };
        let bytewise = |body: &[u8]| -> Vec<usize> {
            body.iter().enumerate().filter(|(_, byte)| special(byte)).map(|(at, _)| at).collect()
        };
        for length in 0..=17 {
            for at in 0..length {
                for byte in 0..=u8::MAX {
                    let mut body = vec![b'a'; length];
                    body[at] = byte;
                    assert_eq!(found_in(&body), bytewise(&body), "{body:?}");
                }
            }
        }
        let mut rng = model::rng::SeededRng::new(0x5A4);
        for _ in 0..2_000 {
            let length = rng.below(70) as usize;
            let body: Vec<u8> = (0..length)
                .map(|_| match rng.below(3) {
                    0 => b"&=+%"[rng.below(4) as usize],
                    _ => rng.below(256) as u8,
                })
                .collect();
            assert_eq!(found_in(&body), bytewise(&body), "{body:?}");
        }
    }

    #[test]
    fn bad_requests_are_named() {
        assert_eq!(parse(b"DESTINATION_ALIAS=a"), Err(RequestError::Missing("POLICY_TYPE")));
        assert!(matches!(parse(b"POLICY_TYPE=PARTY"), Err(RequestError::BadValue { .. })));
        assert_eq!(parse(b"POLICY_TYPE=SEARCH&X=%zz"), Err(RequestError::NotForm));
        assert_eq!(parse(b"POLICY_TYPE=SEARCH&X=%"), Err(RequestError::NotForm));
        assert_eq!(parse(&[0xff, b'=', b'1']), Err(RequestError::NotForm));
        let huge = vec![b'a'; REQUEST_BYTES_MAX + 1];
        assert!(matches!(parse(&huge), Err(RequestError::TooLarge { .. })));
        let long =
            format!("POLICY_TYPE=SEARCH&DESTINATION_ALIAS={}", "a".repeat(VALUE_BYTES_MAX + 1));
        assert!(matches!(parse(long.as_bytes()), Err(RequestError::ValueTooLong(_))));
    }
}
