//! Fuzz target: key parsing never panics, and accepts exactly the documented shape.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = creapic_core::key::parse_key(text) {
            assert_eq!(text.len(), 72);
            assert!(text.starts_with("wi_live_") || text.starts_with("wi_test_"));
            let _ = key.digest();
        }
    }
});
