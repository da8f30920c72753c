//! libFuzzer target: `serin_sync::inputs::notification_document` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = serin_sync::inputs::notification_document(text);
    }
});
