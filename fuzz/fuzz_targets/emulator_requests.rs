//! libFuzzer target: `serin_testbed::apiserver::inputs::requests` must never panic, and never
//! answer a request with a server error (a bad request is the client's fault).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for status in serin_testbed::apiserver::inputs::requests(text) {
            assert!(status < 500, "answered {status}");
        }
    }
});
