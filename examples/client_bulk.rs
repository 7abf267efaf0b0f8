//! A bulk image job through the creapic API, with a progress bar while waiting for it.
//!
//! Starts one job (1 credit per image), polls it with the client's waiter — exponential delays
//! with jitter, bounded by `WaitOptions` — and draws the progress with `indicatif`, then lists
//! each image's link or error.
//!
//! ```text
//! export AI_MEDIA_MAKER_API_KEY=wi_live_…        # or CREAPIC_API_KEY
//! export CREAPIC_BASE_URL=http://127.0.0.1:8080  # default: https://maker.cappuai.com
//! cargo run -p creapic --example client_bulk -- "A sunset over the ocean" "A futuristic city"
//! ```
//!
//! Without a key or a reachable server it stops with a message saying what to set.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::Duration;

use creapic_client::wire::JobStatusWire;
use creapic_client::{Client, Error, WaitOptions};
use indicatif::{ProgressBar, ProgressStyle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut prompts: Vec<String> = std::env::args().skip(1).collect();
    if prompts.is_empty() {
        prompts = vec![
            "A beautiful sunset over the ocean".into(),
            "A futuristic cityscape".into(),
            "A lighthouse in a storm, oil painting".into(),
        ];
    }
    match run(prompts).await {
        Ok(JobStatusWire::Completed) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("the job finished as {status:?}; failed images were refunded");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(prompts: Vec<String>) -> Result<JobStatusWire, Error> {
    let client = Client::from_env()?;
    let job = client.playground().create(prompts).await?;
    println!(
        "job {}: {} images, {} credits used, {} left",
        job.job_id, job.total_images, job.credits_used, job.credits
    );
    let bar = ProgressBar::new(u64::from(job.total_images));
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} images {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    let options = WaitOptions {
        max_wait: Duration::from_secs(10 * 60),
        min_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(5),
    };
    let waited = client
        .playground()
        .wait_for_job(&job.job_id, options)
        .on_progress(|p| {
            bar.set_position(u64::from(p.completed + p.failed));
            if p.failed > 0 {
                bar.set_message(format!("({} failed)", p.failed));
            }
        })
        .await;
    bar.finish();
    let done = waited?;
    for image in &done.images {
        match (&image.url, &image.error) {
            (Some(url), _) => {
                // Links may be relative to the server (`/api/media/…`).
                let url = client
                    .base_url()
                    .join(url)
                    .map_or(url.clone(), String::from);
                println!("#{} {}: {url}", image.index, image.prompt);
            }
            (None, Some(e)) => println!("#{} {}: failed ({})", image.index, image.prompt, e.code),
            (None, None) => println!("#{} {}: {:?}", image.index, image.prompt, image.status),
        }
    }
    println!(
        "{:?}: {} generated, {} failed; {} credits charged, {} refunded",
        done.status,
        done.completed_images,
        done.failed_images,
        done.credits_used,
        done.credits_refunded
    );
    Ok(done.status)
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
        "insufficient_credits" => Some("the organization needs 1 credit per prompt"),
        "exceeded_max_wait" => Some("the job is still running: poll it later by its id"),
        _ => None,
    }
}
