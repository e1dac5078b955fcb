//! The replication wire format (`replication::Message::decode`, postcard) on what a cluster
//! peer sends: a message or a `WireError`, never a panic; what decodes encodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(message) = replication::Message::decode(bytes) {
        let _ = message.encode();
    }
});
