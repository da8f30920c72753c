//! libFuzzer target: `serin_sync::inputs::helm_index` (an index, then the versions a range
//! selects; the first line is the range) must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (range, index) = text.split_once('\n').unwrap_or((text, ""));
        let _ = serin_sync::inputs::helm_index(index, range);
    }
});
