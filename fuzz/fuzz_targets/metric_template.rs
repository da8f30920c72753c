//! libFuzzer target: `serin::inputs::metric_template_document` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = serin::inputs::metric_template_document(text);
    }
});
