//! The XML-RPC codec on what a bridge answers and what a bridge posts to a feedback receiver:
//! a decoded value or a `BridgeError`, never a panic, within the codec's size and depth limits.
#![no_main]

use bridges::xmlrpc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|document: &[u8]| {
    if let Ok(Ok(value)) = xmlrpc::decode_response(document) {
        // What we decoded, we can encode again.
        let _ = xmlrpc::encode_response(&value);
    }
    if let Ok(call) = xmlrpc::decode_call(document) {
        let _ = xmlrpc::encode_call(&call.method, &call.params);
    }
    let _ = bridges::parse_event_notification(document);
});
