//! A small XML-RPC codec: the values the bridges' management APIs use, an encoder with correct
//! escaping and a decoder (`quick-xml`) for method calls and responses, faults included.
//!
//! Decoding is bounded: documents longer than [`DOCUMENT_BYTES_MAX`] and values nested deeper
//! than [`NESTING_DEPTH_MAX`] are refused as malformed, and a `<!DOCTYPE>` is refused outright
//! (no entity games). `dateTime.iso8601` and `base64` values are kept as their text; this
//! crate never needs to interpret them.

use crate::BridgeError;
use quick_xml::Reader;
use quick_xml::events::Event;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The longest XML-RPC document (request or response) this codec will decode.
pub const DOCUMENT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The deepest element nesting accepted; real bridge documents stay well under 20.
pub const NESTING_DEPTH_MAX: usize = 64;

/// The members of an XML-RPC struct, sorted by name.
pub type Struct = BTreeMap<String, Value>;

/// One XML-RPC value.
#[derive(Clone, PartialEq, Debug)]
pub enum Value {
    Int(i32),
    Bool(bool),
    String(String),
    Double(f64),
    /// `dateTime.iso8601`, kept as the text the peer sent.
    DateTime(String),
    /// `base64`, kept encoded.
    Base64(String),
    Struct(Struct),
    Array(Vec<Value>),
    Nil,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_i32(&self) -> Option<i32> {
        match self {
            Value::Int(number) => Some(*number),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(flag) => Some(*flag),
            _ => None,
        }
    }

    pub fn as_struct(&self) -> Option<&Struct> {
        match self {
            Value::Struct(members) => Some(members),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::String(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::String(text)
    }
}

impl From<i32> for Value {
    fn from(number: i32) -> Value {
        Value::Int(number)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Value {
        Value::Bool(flag)
    }
}

impl From<Struct> for Value {
    fn from(members: Struct) -> Value {
        Value::Struct(members)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::Array(items)
    }
}

/// An XML-RPC fault: the peer understood the call and refused it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Fault {
    pub code: i32,
    pub message: String,
}

/// A decoded `<methodCall>`.
#[derive(Clone, PartialEq, Debug)]
pub struct MethodCall {
    pub method: String,
    pub params: Vec<Value>,
}

// ---------------------------------------------------------------------------------------------
// Encoding

const PROLOGUE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// A `<methodCall>` document.
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = String::from(PROLOGUE);
    out.push_str("<methodCall><methodName>");
    escape_into(&mut out, method);
    out.push_str("</methodName><params>");
    for param in params {
        out.push_str("<param>");
        encode_value(&mut out, param);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out
}

/// A successful `<methodResponse>` carrying one value.
pub fn encode_response(value: &Value) -> String {
    let mut out = String::from(PROLOGUE);
    out.push_str("<methodResponse><params><param>");
    encode_value(&mut out, value);
    out.push_str("</param></params></methodResponse>");
    out
}

/// A `<methodResponse>` carrying a fault.
pub fn encode_fault(fault: &Fault) -> String {
    let members = Struct::from([
        ("faultCode".to_owned(), Value::Int(fault.code)),
        ("faultString".to_owned(), Value::String(fault.message.clone())),
    ]);
    let mut out = String::from(PROLOGUE);
    out.push_str("<methodResponse><fault>");
    encode_value(&mut out, &Value::Struct(members));
    out.push_str("</fault></methodResponse>");
    out
}

fn encode_value(out: &mut String, value: &Value) {
    out.push_str("<value>");
    match value {
        Value::Int(number) => {
            let _ = write!(out, "<int>{number}</int>");
        }
        Value::Bool(flag) => {
            let _ = write!(out, "<boolean>{}</boolean>", u8::from(*flag));
        }
        Value::String(text) => {
            out.push_str("<string>");
            escape_into(out, text);
            out.push_str("</string>");
        }
        Value::Double(number) => {
            // XML-RPC has no notation for infinities or NaN; send zero rather than a
            // document the peer must refuse. Rust's `Display` for f64 never uses exponents.
            let number = if number.is_finite() { *number } else { 0.0 };
            let _ = write!(out, "<double>{number}</double>");
        }
        Value::DateTime(text) => {
            out.push_str("<dateTime.iso8601>");
            escape_into(out, text);
            out.push_str("</dateTime.iso8601>");
        }
        Value::Base64(text) => {
            out.push_str("<base64>");
            escape_into(out, text);
            out.push_str("</base64>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>");
            for (name, member) in members {
                out.push_str("<member><name>");
                escape_into(out, name);
                out.push_str("</name>");
                encode_value(out, member);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for item in items {
                encode_value(out, item);
            }
            out.push_str("</data></array>");
        }
        Value::Nil => out.push_str("<nil/>"),
    }
    out.push_str("</value>");
}

/// Escapes text for element content. Characters XML 1.0 cannot carry at all (most C0
/// controls) are dropped rather than producing a document the peer must refuse.
fn escape_into(out: &mut String, text: &str) {
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(character),
            control if (control as u32) < 0x20 => {}
            other => out.push(other),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes a `<methodResponse>`: `Ok(Ok(value))` for a result, `Ok(Err(fault))` for a fault.
pub fn decode_response(document: &[u8]) -> Result<Result<Value, Fault>, BridgeError> {
    let root = parse(document)?;
    root.expect_name("methodResponse")?;
    let child = root.only_child()?;
    match child.name.as_str() {
        "params" => {
            let param = child.only_child()?;
            param.expect_name("param")?;
            Ok(Ok(decode_value(param.only_child()?)?))
        }
        "fault" => {
            let value = decode_value(child.only_child()?)?;
            let members =
                value.as_struct().ok_or_else(|| malformed("a fault's value is not a struct"))?;
            let code = members
                .get("faultCode")
                .and_then(Value::as_i32)
                .ok_or_else(|| malformed("a fault without an integer faultCode"))?;
            let message = members.get("faultString").and_then(Value::as_str).unwrap_or_default();
            Ok(Err(Fault { code, message: message.to_owned() }))
        }
        other => Err(malformed(format!("unexpected <{other}> in <methodResponse>"))),
    }
}

/// Decodes a `<methodCall>`.
pub fn decode_call(document: &[u8]) -> Result<MethodCall, BridgeError> {
    let root = parse(document)?;
    root.expect_name("methodCall")?;
    let mut method = None;
    let mut params = Vec::new();
    for child in &root.children {
        match child.name.as_str() {
            "methodName" => method = Some(child.text.trim().to_owned()),
            "params" => {
                for param in &child.children {
                    param.expect_name("param")?;
                    params.push(decode_value(param.only_child()?)?);
                }
            }
            other => return Err(malformed(format!("unexpected <{other}> in <methodCall>"))),
        }
    }
    let method = method.filter(|name| !name.is_empty());
    let method = method.ok_or_else(|| malformed("a <methodCall> without a <methodName>"))?;
    Ok(MethodCall { method, params })
}

fn decode_value(element: &Element) -> Result<Value, BridgeError> {
    element.expect_name("value")?;
    let Some(typed) = element.children.first() else {
        // An untyped value is a string, whitespace included.
        return Ok(Value::String(element.text.clone()));
    };
    if element.children.len() > 1 {
        return Err(malformed("a <value> with more than one child"));
    }
    let text = typed.text.as_str();
    let value = match typed.name.as_str() {
        "i4" | "int" => {
            Value::Int(text.trim().parse().map_err(|_| malformed(format!("bad integer {text:?}")))?)
        }
        "boolean" => match text.trim() {
            "1" => Value::Bool(true),
            "0" => Value::Bool(false),
            other => return Err(malformed(format!("bad boolean {other:?}"))),
        },
        "string" => Value::String(text.to_owned()),
        "double" => Value::Double(
            text.trim().parse().map_err(|_| malformed(format!("bad double {text:?}")))?,
        ),
        "dateTime.iso8601" => Value::DateTime(text.trim().to_owned()),
        "base64" => Value::Base64(text.trim().to_owned()),
        "nil" => Value::Nil,
        "struct" => {
            let mut members = Struct::new();
            for member in &typed.children {
                member.expect_name("member")?;
                let mut name = None;
                let mut value = None;
                for part in &member.children {
                    match part.name.as_str() {
                        "name" => name = Some(part.text.clone()),
                        "value" => value = Some(decode_value(part)?),
                        other => {
                            return Err(malformed(format!("unexpected <{other}> in <member>")));
                        }
                    }
                }
                match (name, value) {
                    (Some(name), Some(value)) => {
                        members.insert(name, value);
                    }
                    _ => return Err(malformed("a <member> needs a <name> and a <value>")),
                }
            }
            Value::Struct(members)
        }
        "array" => {
            let data = typed.only_child()?;
            data.expect_name("data")?;
            Value::Array(data.children.iter().map(decode_value).collect::<Result<_, _>>()?)
        }
        other => return Err(malformed(format!("unknown value type <{other}>"))),
    };
    Ok(value)
}

/// A parsed element: its children, or its text when it has none.
#[derive(Debug, Default)]
struct Element {
    name: String,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn expect_name(&self, expected: &str) -> Result<(), BridgeError> {
        if self.name == expected {
            Ok(())
        } else {
            Err(malformed(format!("expected <{expected}>, found <{}>", self.name)))
        }
    }

    fn only_child(&self) -> Result<&Element, BridgeError> {
        match self.children.as_slice() {
            [child] => Ok(child),
            children => Err(malformed(format!(
                "<{}> must have exactly one child element, it has {}",
                self.name,
                children.len()
            ))),
        }
    }
}

/// Parses a whole document into a tree of elements, checking size, depth and well-formedness.
fn parse(document: &[u8]) -> Result<Element, BridgeError> {
    if document.len() > DOCUMENT_BYTES_MAX {
        return Err(malformed(format!(
            "document of {} bytes is over the limit of {DOCUMENT_BYTES_MAX}",
            document.len()
        )));
    }
    let text = std::str::from_utf8(document).map_err(|_| malformed("document is not UTF-8"))?;
    let mut reader = Reader::from_str(text);
    // A stack of open elements; the root ends up alone in `done`.
    let mut open: Vec<Element> = Vec::new();
    let mut done: Option<Element> = None;
    loop {
        let event = reader.read_event().map_err(|error| {
            malformed(format!("XML error at byte {}: {error}", reader.error_position()))
        })?;
        match event {
            Event::Start(start) => {
                if done.is_some() {
                    return Err(malformed("content after the root element"));
                }
                if open.len() >= NESTING_DEPTH_MAX {
                    return Err(malformed(format!("nesting deeper than {NESTING_DEPTH_MAX}")));
                }
                open.push(Element {
                    name: element_name(start.name().as_ref())?,
                    ..Default::default()
                });
            }
            Event::Empty(empty) => {
                let element =
                    Element { name: element_name(empty.name().as_ref())?, ..Default::default() };
                match open.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if done.is_none() => done = Some(element),
                    None => return Err(malformed("content after the root element")),
                }
            }
            Event::End(_) => {
                // quick-xml checks that end tags match their start tags.
                let element = open.pop().ok_or_else(|| malformed("unbalanced end tag"))?;
                match open.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => done = Some(element),
                }
            }
            Event::Text(text) => {
                let text = text.unescape().map_err(|error| malformed(format!("{error}")))?;
                match open.last_mut() {
                    Some(element) => element.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(malformed("text outside the root element")),
                }
            }
            Event::CData(data) => {
                let data =
                    std::str::from_utf8(&data).map_err(|_| malformed("CDATA is not UTF-8"))?;
                match open.last_mut() {
                    Some(element) => element.text.push_str(data),
                    None => return Err(malformed("CDATA outside the root element")),
                }
            }
            Event::DocType(_) => return Err(malformed("a <!DOCTYPE> is not allowed")),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !open.is_empty() {
        return Err(malformed("document ends inside an element"));
    }
    done.ok_or_else(|| malformed("empty document"))
}

fn element_name(raw: &[u8]) -> Result<String, BridgeError> {
    std::str::from_utf8(raw).map(str::to_owned).map_err(|_| malformed("element name is not UTF-8"))
}

fn malformed(message: impl Into<String>) -> BridgeError {
    BridgeError::Malformed(message.into())
}

#[cfg(test)]
mod tests;
