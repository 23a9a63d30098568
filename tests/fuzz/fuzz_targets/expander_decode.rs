//! Node and pod protobuf bytes from the cluster-autoscaler expander request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale::expander::{decode_node, decode_pod};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the message, so one corpus grows inputs for both.
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let _ = decode_node(bytes, "nodeBytesMap", "pool");
    } else {
        let _ = decode_pod(bytes, 0, "pods", 0);
    }
});
