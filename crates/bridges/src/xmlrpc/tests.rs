//! Codec tests: round trips, escaping, nesting, faults, documents as bridges write them, and
//! refusals of malformed or oversized input.

#![allow(clippy::unwrap_used)]

use super::*;

fn members(pairs: &[(&str, Value)]) -> Struct {
    pairs.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect()
}

fn round_trip(value: Value) {
    let document = encode_response(&value);
    assert_eq!(decode_response(document.as_bytes()).unwrap(), Ok(value), "{document}");
}

#[test]
fn every_value_type_survives_a_round_trip() {
    round_trip(Value::Int(-42));
    round_trip(Value::Int(i32::MAX));
    round_trip(Value::Bool(true));
    round_trip(Value::Bool(false));
    round_trip(Value::String(String::new()));
    round_trip(Value::String("  spaced  ".to_owned()));
    round_trip(Value::Double(1.5));
    round_trip(Value::Double(-0.25));
    round_trip(Value::DateTime("20250101T10:00:00".to_owned()));
    round_trip(Value::Base64("aGVsbG8=".to_owned()));
    round_trip(Value::Nil);
    round_trip(Value::Array(Vec::new()));
    round_trip(Value::Struct(Struct::new()));
}

#[test]
fn text_is_escaped_and_unescaped() {
    let tricky = "a < b && c > d \"quoted\" 'single' ]]> line\nbreak\r\ttab é ☎";
    let document = encode_response(&Value::from(tricky));
    assert!(document.contains("a &lt; b &amp;&amp; c &gt; d"), "{document}");
    assert!(!document.contains("a < b"), "{document}");
    round_trip(Value::from(tricky));

    // Member names and method names are escaped too.
    let odd_name = members(&[("x<&>y", Value::Int(1))]);
    round_trip(Value::Struct(odd_name));
    let call = encode_call("a&b", &[]);
    assert_eq!(decode_call(call.as_bytes()).unwrap().method, "a&b");
}

#[test]
fn control_characters_xml_cannot_carry_are_dropped() {
    let document = encode_response(&Value::from("bell\u{7}here"));
    assert_eq!(decode_response(document.as_bytes()).unwrap(), Ok(Value::from("bellhere")));
}

#[test]
fn nested_structs_and_arrays_survive_a_round_trip() {
    let participant = Value::Struct(members(&[
        ("participantID", Value::from("p-1")),
        ("calls", Value::Array(vec![Value::Struct(members(&[("callID", Value::Int(7))]))])),
    ]));
    let value = Value::Struct(members(&[
        ("participants", Value::Array(vec![participant.clone(), participant])),
        ("moreAvailable", Value::Bool(true)),
        ("nested", Value::Array(vec![Value::Array(vec![Value::Nil, Value::Int(1)])])),
    ]));
    round_trip(value);
}

#[test]
fn a_call_round_trips_with_its_struct_param() {
    let param = Value::Struct(members(&[
        ("authenticationUser", Value::from("admin")),
        ("conferenceName", Value::from("meet & greet")),
    ]));
    let document = encode_call("conference.create", std::slice::from_ref(&param));
    let call = decode_call(document.as_bytes()).unwrap();
    assert_eq!(call, MethodCall { method: "conference.create".to_owned(), params: vec![param] });
}

#[test]
fn documents_as_bridges_write_them_decode() {
    // Untyped values, `i4`, whitespace between elements, CDATA and a comment.
    let document = br#"<?xml version="1.0"?>
        <methodResponse>
          <params>
            <param>
              <value>
                <struct>
                  <member><name>status</name><value>operation successful</value></member>
                  <member><name>count</name><value><i4> 3 </i4></value></member>
                  <!-- a comment -->
                  <member><name>raw</name><value><string><![CDATA[<b>&]]></string></value></member>
                  <member><name>empty</name><value/></member>
                  <member><name>emptyString</name><value><string/></value></member>
                </struct>
              </value>
            </param>
          </params>
        </methodResponse>"#;
    let expected = members(&[
        ("status", Value::from("operation successful")),
        ("count", Value::Int(3)),
        ("raw", Value::from("<b>&")),
        ("empty", Value::from("")),
        ("emptyString", Value::from("")),
    ]);
    assert_eq!(decode_response(document).unwrap(), Ok(Value::Struct(expected)));
}

#[test]
fn faults_decode_with_their_code_and_message() {
    let fault = Fault { code: 2, message: "duplicate conference name".to_owned() };
    let document = encode_fault(&fault);
    assert_eq!(decode_response(document.as_bytes()).unwrap(), Err(fault));

    let untyped = br#"<methodResponse><fault><value><struct>
        <member><name>faultCode</name><value><int>15</int></value></member>
        <member><name>faultString</name><value>insufficient privileges</value></member>
        </struct></value></fault></methodResponse>"#;
    assert_eq!(
        decode_response(untyped).unwrap(),
        Err(Fault { code: 15, message: "insufficient privileges".to_owned() })
    );
}

#[test]
fn malformed_documents_are_refused() {
    let cases: &[&[u8]] = &[
        b"",
        b"not xml at all",
        b"<methodResponse>",
        b"<methodResponse><params></methodResponse>",
        b"<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
        b"<methodResponse><params><param><value><int>99999999999</int></value></param></params></methodResponse>",
        b"<methodResponse><params><param><value><boolean>yes</boolean></value></param></params></methodResponse>",
        b"<methodResponse><params><param><value><float>1</float></value></param></params></methodResponse>",
        b"<methodResponse><params><param><value><struct><member><name>a</name></member></struct></value></param></params></methodResponse>",
        b"<methodResponse><params></params></methodResponse>",
        b"<methodResponse><fault><value><int>1</int></value></fault></methodResponse>",
        b"<methodResponse><fault><value><struct></struct></value></fault></methodResponse>",
        b"<methodCall><params/></methodCall>",
        b"<html><body>Bad gateway</body></html>",
        b"<methodResponse></methodResponse><extra/>",
        b"<!DOCTYPE x [<!ENTITY a 'b'>]><methodResponse/>",
        b"<methodResponse>\xff</methodResponse>",
        b"<methodResponse><params><param><value><string>&bogus;</string></value></param></params></methodResponse>",
    ];
    for case in cases {
        let result = decode_response(case);
        assert!(
            matches!(result, Err(BridgeError::Malformed(_))),
            "{:?} gave {result:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert!(matches!(decode_call(b"<methodCall/>"), Err(BridgeError::Malformed(_))));
}

#[test]
fn oversized_and_overdeep_documents_are_refused() {
    let filler = "x".repeat(DOCUMENT_BYTES_MAX);
    let big = encode_response(&Value::from(filler));
    assert!(matches!(decode_response(big.as_bytes()), Err(BridgeError::Malformed(_))));

    let mut deep = Value::Int(1);
    for _ in 0..NESTING_DEPTH_MAX {
        deep = Value::Array(vec![deep]);
    }
    let document = encode_response(&deep);
    let Err(BridgeError::Malformed(message)) = decode_response(document.as_bytes()) else {
        panic!("a document nested {NESTING_DEPTH_MAX} arrays deep was accepted");
    };
    assert!(message.contains("nesting"), "{message}");
}
