//! Client quickstart: generate one image through the creapic API and save it to a file.
//!
//! Needs a creapic server and a key with the `IMAGE_GENERATION` scope:
//!
//! ```text
//! export AI_MEDIA_MAKER_API_KEY=wi_live_…        # or CREAPIC_API_KEY
//! export CREAPIC_BASE_URL=http://127.0.0.1:8080  # default: https://maker.cappuai.com
//! cargo run -p creapic --example client_generate -- "Citrus mocktails" mocktails.png
//! ```
//!
//! Without a key or a reachable server it stops with a message saying what to set.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use creapic_client::wire::{AspectRatioWire, GenerateImageRequest, ImageSource, QualityWire};
use creapic_client::{Client, Error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let prompt = args
        .next()
        .unwrap_or_else(|| "Article about citrus mocktails with summer ingredients".into());
    let out = args.next();
    match run(&prompt, out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(prompt: &str, out: Option<String>) -> Result<(), Error> {
    let client = Client::from_env()?;
    println!("generating with {} …", client.base_url());
    let generated = client
        .images()
        .generate(GenerateImageRequest {
            source: ImageSource::Text {
                text: prompt.to_owned(),
            },
            aspect_ratio: AspectRatioWire::R4x5,
            quality: QualityWire::Standard,
            organization_id: None,
        })
        .send_with_meta()
        .await?;
    let image = generated.body;
    println!(
        "generation {} ({} tokens used, {} left; request {})",
        image.generation.id,
        image.generation.tokens_used,
        image.tokens,
        generated.meta.request_id.as_deref().unwrap_or("-"),
    );
    let file = client.media().download(&image.image_url).await?;
    let path = out.unwrap_or_else(|| format!("creapic-image.{}", file.extension()));
    std::fs::write(&path, &file.bytes).map_err(|e| Error::InvalidArgument {
        name: "output path",
        reason: format!("could not write {path}: {e}"),
    })?;
    println!("saved {} bytes to {path}", file.bytes.len());
    Ok(())
}

/// What to do about the errors a first run usually meets.
fn hint(e: &Error) -> Option<&'static str> {
    match e.code() {
        "invalid_config" | "invalid_api_key_format" => Some(
            "set AI_MEDIA_MAKER_API_KEY to a wi_live_/wi_test_ key and CREAPIC_BASE_URL to your server",
        ),
        "connect" | "timeout" => {
            Some("is a creapic server running at CREAPIC_BASE_URL (e.g. http://127.0.0.1:8080)?")
        }
        "invalid_api_key" | "missing_authorization" => {
            Some("the server does not know this key: create one in the dashboard")
        }
        "missing_scope" => Some("the key needs the IMAGE_GENERATION scope"),
        "insufficient_credits" => Some("the organization has no tokens left"),
        _ => None,
    }
}
