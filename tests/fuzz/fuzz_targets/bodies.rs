//! Fuzz target: every request body type parses arbitrary bytes into a value or a typed
//! `invalid_json` error naming a path — never a panic.
#![no_main]

use creapic_core::wire::{
    BulkImagesRequest, CreateKeyRequest, CreateOrganizationRequest, GenerateImageRequest,
    SceneRenderRequest,
};
use creapic_server_kit::http::body::parse;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = parse::<GenerateImageRequest>(data);
    let _ = parse::<SceneRenderRequest>(data);
    let _ = parse::<CreateOrganizationRequest>(data);
    let _ = parse::<BulkImagesRequest>(data);
    let _ = parse::<CreateKeyRequest>(data);
});
