//! Fuzz target: credential extraction from arbitrary `Authorization` / `x-api-key` bytes never
//! panics and only ever yields a well-formed key.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (auth, x) = data.split_at(split);
    for (a, b) in [(Some(auth), None), (None, Some(x)), (Some(auth), Some(x))] {
        if let Ok(key) = creapic_core::key::extract_key(a, b) {
            let _ = key.prefix();
        }
    }
});
