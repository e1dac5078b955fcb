//! CPL in the VCS's dialect: the answers Baton sends, and a checker/interpreter of such answers
//! (used by the tests' VCS emulator and to prove every answer keeps the dialect's rules: root
//! `cpl` in the CPL namespace, the `taa` extension namespace, exactly one `taa:routed`, and
//! none of the elements the VCS refuses).

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};

pub const CPL_NAMESPACE: &str = "urn:ietf:params:xml:ns:cpl";
pub const TAA_NAMESPACE: &str = "http://www.tandberg.net/cpl-extensions";
/// The VCS accepts application/xml; public policy servers send it.
pub const CONTENT_TYPE: &str = "application/xml";

/// Sends the call to `url` (a bridge's conference address), replacing the destination.
pub fn route(url: &str) -> String {
    let url = quick_xml::escape::escape(url);
    envelope(r#"<taa:location clear="yes" url=""#, &url, r#""><proxy/></taa:location>"#)
}

/// Refuses the call with a status and a reason the VCS logs.
pub fn reject(status: u16, reason: &str) -> String {
    let open = format!(r#"<reject status="{status}" reason=""#);
    envelope(&open, &quick_xml::escape::escape(reason), r#""/>"#)
}

/// The CPL a decided call gets: its route or its refusal. `Create` is not an answer (the
/// conference must be made first): the caller routes once it is, so this refuses it as an
/// internal error should one ever get here.
pub fn answer(decision: &crate::Decision) -> String {
    match decision {
        crate::Decision::Route { url, .. } => route(url),
        crate::Decision::Reject(reason) => reject(reason.status(), reason.text()),
        crate::Decision::Create { .. } => reject(500, "Internal error"),
    }
}

/// What every answer starts with, before its `taa:routed` content (made once: it names the
/// namespaces from their constants).
static ENVELOPE_START: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><cpl xmlns="{CPL_NAMESPACE}" xmlns:taa="{TAA_NAMESPACE}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="urn:ietf:params:xml:ns:cpl cpl.xsd"><taa:routed>"#
    )
});
/// What every answer ends with.
const ENVELOPE_END: &str = "</taa:routed></cpl>";

/// An element (its opening, escaped text and closing) inside the envelope. `concat` allocates
/// the string at exactly its length: a route is every call's answer, and an exact string
/// becomes the response body without another allocation.
fn envelope(open: &str, text: &str, close: &str) -> String {
    [ENVELOPE_START.as_str(), open, text, close, ENVELOPE_END].concat()
}

/// What a VCS would do with a CPL answer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// Proxy the call to these destinations (empty: to the original destination).
    Route {
        urls: Vec<String>,
    },
    Reject {
        status: u16,
        reason: String,
    },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CplError {
    #[error("not XML: {0}")]
    NotXml(String),
    #[error("the root must be `cpl` in {CPL_NAMESPACE}")]
    BadRoot,
    #[error("exactly one taa:routed is allowed, found {0}")]
    RoutedCount(usize),
    #[error("element {0} is not accepted by the VCS")]
    Refused(String),
    #[error("element {0} must be inside taa:routed")]
    OutsideRouted(String),
    #[error("{0} lacks attribute {1}")]
    MissingAttribute(&'static str, &'static str),
    #[error("taa:routed takes no action")]
    NoAction,
}

/// Elements the VCS refuses at upload (so Baton must never send them).
const REFUSED: &[&str] = &[
    "time-switch",
    "string-switch",
    "language-switch",
    "priority-switch",
    "redirect",
    "mail",
    "log",
    "subaction",
    "lookup",
    "remove-location",
    "incoming",
    "outgoing",
];
const ACCEPTED_CPL: &[&str] = &[
    "cpl",
    "location",
    "proxy",
    "reject",
    "failure",
    "busy",
    "noanswer",
    "redirection",
    "default",
    "address-switch",
    "address",
    "not-present",
    "otherwise",
];
const ACCEPTED_TAA: &[&str] = &["routed", "location", "rule-switch", "rule"];

/// Checks `document` against the dialect and says what the VCS would do: the first action in
/// document order (a `proxy` with the destinations of its enclosing locations, or a `reject`).
pub fn interpret(document: &str) -> Result<Outcome, CplError> {
    let mut reader = quick_xml::NsReader::from_str(document);
    let mut depth = 0usize;
    let mut routed_count = 0usize;
    let mut inside_routed_at: Option<usize> = None;
    // Destinations set by enclosing locations, one entry per open element.
    let mut locations: Vec<Vec<String>> = vec![Vec::new()];
    let mut outcome = None;
    loop {
        let (namespace, event) =
            reader.read_resolved_event().map_err(|error| CplError::NotXml(error.to_string()))?;
        let (element, empty) = match &event {
            Event::Start(element) => (element.clone(), false),
            Event::Empty(element) => (element.clone(), true),
            Event::End(_) => {
                depth -= 1;
                locations.pop();
                if inside_routed_at == Some(depth) {
                    inside_routed_at = None;
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let local = String::from_utf8_lossy(element.local_name().as_ref()).into_owned();
        let ns = match namespace {
            ResolveResult::Bound(Namespace(ns)) => String::from_utf8_lossy(ns).into_owned(),
            _ => String::new(),
        };
        if depth == 0 && (local != "cpl" || ns != CPL_NAMESPACE) {
            return Err(CplError::BadRoot);
        }
        let taa = ns == TAA_NAMESPACE;
        if REFUSED.contains(&local.as_str())
            || (taa && !ACCEPTED_TAA.contains(&local.as_str()))
            || (!taa && !ACCEPTED_CPL.contains(&local.as_str()))
        {
            return Err(CplError::Refused(local));
        }
        if taa && local == "routed" {
            routed_count += 1;
            if depth != 1 {
                return Err(CplError::OutsideRouted("taa:routed".to_owned()));
            }
            inside_routed_at = Some(depth);
        } else if depth > 0 && inside_routed_at.is_none() {
            return Err(CplError::OutsideRouted(local));
        }
        let mut current = locations.last().cloned().unwrap_or_default();
        match local.as_str() {
            "location" => {
                let url = attribute(&element, "url")
                    .ok_or(CplError::MissingAttribute("location", "url"))?;
                if attribute(&element, "clear").as_deref() == Some("yes") {
                    current.clear();
                }
                current.push(url);
            }
            "proxy" if outcome.is_none() => {
                outcome = Some(Outcome::Route { urls: current.clone() })
            }
            "reject" if outcome.is_none() => {
                let status = attribute(&element, "status")
                    .and_then(|status| status.parse().ok())
                    .ok_or(CplError::MissingAttribute("reject", "status"))?;
                let reason = attribute(&element, "reason").unwrap_or_default();
                outcome = Some(Outcome::Reject { status, reason });
            }
            _ => {}
        }
        if !empty {
            depth += 1;
            locations.push(current);
        }
    }
    if routed_count != 1 {
        return Err(CplError::RoutedCount(routed_count));
    }
    outcome.ok_or(CplError::NoAction)
}

fn attribute(element: &BytesStart<'_>, name: &str) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|attribute| attribute.key.local_name().as_ref() == name.as_bytes())
        .and_then(|attribute| attribute.unescape_value().ok().map(|value| value.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_the_dialect_and_mean_what_they_say() {
        assert_eq!(
            interpret(&route("meet.alice@10.0.0.50")),
            Ok(Outcome::Route { urls: vec!["meet.alice@10.0.0.50".to_owned()] })
        );
        assert_eq!(
            interpret(&reject(503, "No capacity <&\"> here")),
            Ok(Outcome::Reject { status: 503, reason: "No capacity <&\"> here".to_owned() })
        );
        let awkward = route("a&b\"<c>@host");
        assert_eq!(
            interpret(&awkward),
            Ok(Outcome::Route { urls: vec!["a&b\"<c>@host".to_owned()] })
        );
        // Exactly as long as allocated: the response body takes it without copying it.
        for answer in [route("meet.alice@10.0.0.50"), awkward, reject(503, "No <capacity>")] {
            assert_eq!(answer.capacity(), answer.len(), "{answer}");
        }
    }

    #[test]
    fn what_the_vcs_refuses_is_refused() {
        let wrap = |body: &str| {
            format!(r#"<cpl xmlns="{CPL_NAMESPACE}" xmlns:taa="{TAA_NAMESPACE}">{body}</cpl>"#)
        };
        assert_eq!(interpret(&wrap("<proxy/>")), Err(CplError::OutsideRouted("proxy".to_owned())));
        assert_eq!(interpret(&wrap("")), Err(CplError::RoutedCount(0)));
        assert_eq!(
            interpret(&wrap("<taa:routed><proxy/></taa:routed><taa:routed><proxy/></taa:routed>")),
            Err(CplError::RoutedCount(2))
        );
        assert_eq!(
            interpret(&wrap("<taa:routed><mail url='x'/></taa:routed>")),
            Err(CplError::Refused("mail".to_owned()))
        );
        assert_eq!(
            interpret(&wrap("<incoming><proxy/></incoming>")),
            Err(CplError::Refused("incoming".to_owned()))
        );
        assert_eq!(interpret("<cpl><taa:routed/></cpl>"), Err(CplError::BadRoot));
        assert!(matches!(interpret("<cpl"), Err(CplError::NotXml(_)) | Err(CplError::BadRoot)));
        assert_eq!(interpret(&wrap("<taa:routed></taa:routed>")), Err(CplError::NoAction));
        // A fork and a fallback, as the VCS documents them.
        let fork = wrap(
            r#"<taa:routed><taa:location clear="yes" url="a"><taa:location clear="no" url="b"><proxy timeout="10"><failure><reject status="404" reason="x"/></failure></proxy></taa:location></taa:location></taa:routed>"#,
        );
        assert_eq!(
            interpret(&fork),
            Ok(Outcome::Route { urls: vec!["a".to_owned(), "b".to_owned()] })
        );
    }
}
