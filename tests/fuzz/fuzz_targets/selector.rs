//! Kubernetes label selectors from `?labelSelector=` on the external metrics API.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale::api::selector;
use prescale::series::Labels;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = selector::parse(text) {
        // Matching must not panic either, whatever the parsed requirements hold.
        let labels: Labels = [
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), String::new()),
        ]
        .into();
        let _ = sel.matches(&labels);
        let _ = sel.matches(&Labels::new());
    }
});
