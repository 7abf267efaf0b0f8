//! The integrator's commands, through `creapic-client`: `generate` one image and `bulk` jobs
//! with a progress bar. Both read `AI_MEDIA_MAKER_API_KEY` (or `CREAPIC_API_KEY`) and
//! `CREAPIC_BASE_URL`, exactly as an integration would.

use std::path::Path;
use std::time::Duration;

use creapic_client::wire::{AspectRatioWire, GenerateImageRequest, ImageSource, QualityWire};
use creapic_client::{Client, WaitOptions};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{BulkArgs, CliError, CliResult, GenerateArgs, JobCommand};
use crate::output;

impl From<creapic_client::Error> for CliError {
    fn from(e: creapic_client::Error) -> Self {
        let hint = match e.code() {
            "invalid_config" | "invalid_api_key_format" => Some(
                "set AI_MEDIA_MAKER_API_KEY to a wi_live_… or wi_test_… key and CREAPIC_BASE_URL to the server (e.g. http://127.0.0.1:8080)",
            ),
            "connect" | "timeout" => Some("is `creapic serve` running at CREAPIC_BASE_URL?"),
            "insufficient_credits" => Some("creapic credits grant --org ORG_ID --amount N"),
            "missing_scope" => Some("the key needs the IMAGE_GENERATION scope"),
            _ => None,
        };
        CliError {
            message: format!("{e} [{}]", e.code()),
            hint: hint.map(str::to_owned),
            exit_code: 1,
        }
    }
}

fn client() -> CliResult<Client> {
    Client::from_env().map_err(CliError::from)
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    flag: &str,
    value: &str,
    expected: &str,
) -> CliResult<T> {
    serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .map_err(|_| CliError::usage(format!("{flag}: {value:?} is not one of {expected}")))
}

async fn save(client: &Client, url: &str, path: &Path) -> CliResult {
    let file = client.media().download(url).await?;
    std::fs::write(path, &file.bytes)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}

pub async fn generate(args: GenerateArgs) -> CliResult {
    let aspect: AspectRatioWire = parse_enum(
        "--aspect-ratio",
        &args.aspect_ratio,
        "1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9",
    )?;
    let quality: QualityWire = parse_enum("--quality", &args.quality, "standard, hd")?;
    if args.text.trim().is_empty() {
        return Err(CliError::usage("the text must not be empty"));
    }
    let client = client()?;
    let request = GenerateImageRequest {
        source: ImageSource::Text { text: args.text },
        aspect_ratio: aspect,
        quality,
        organization_id: None,
    };
    let response = client.images().generate(request).await?;
    if let Some(out) = &args.out {
        save(&client, &response.image_url, out).await?;
    }
    if args.json {
        return output::json(&response);
    }
    output::line(format!("generation {}", response.generation.id));
    output::line(format!(
        "tokens     {} used, {} left",
        response.generation.tokens_used, response.tokens
    ));
    match &args.out {
        Some(out) => output::line(format!("saved      {}", out.display())),
        None => output::line(format!("image      {}", response.image_url)),
    }
    Ok(())
}

pub async fn bulk(args: BulkArgs) -> CliResult {
    if args.prompts.len() > 100 {
        return Err(CliError::usage("at most 100 prompts per job"));
    }
    let client = client()?;
    let job = client.playground().create(args.prompts.clone()).await?;
    let wait = args.wait || args.out.is_some();
    if !wait {
        if args.json {
            return output::json(&job);
        }
        output::line(format!(
            "job {}: {} images, {} credits used, {} left",
            job.job_id, job.total_images, job.credits_used, job.credits
        ));
        return Ok(());
    }
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(u64::from(job.total_images))
    };
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} images {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    let options = WaitOptions {
        max_wait: Duration::from_secs(30 * 60),
        min_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(5),
    };
    let done = client
        .playground()
        .wait_for_job(&job.job_id, options)
        .on_progress(|p| {
            bar.set_position(u64::from(p.completed + p.failed));
            if p.failed > 0 {
                bar.set_message(format!("({} failed)", p.failed));
            }
        })
        .await;
    bar.finish_and_clear();
    let done = done?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
        for image in &done.images {
            if let Some(url) = &image.url {
                save(&client, url, &dir.join(format!("{:03}.png", image.index))).await?;
            }
        }
    }
    if args.json {
        return output::json(&done);
    }
    output::line(format!(
        "job {} {:?}: {} generated, {} failed; {} credits charged, {} refunded",
        done.job_id,
        done.status,
        done.completed_images,
        done.failed_images,
        done.credits_used,
        done.credits_refunded
    ));
    for image in &done.images {
        match (&image.url, &image.error) {
            (Some(url), _) => output::line(format!("  #{} {}", image.index, url)),
            (None, Some(e)) => output::line(format!(
                "  #{} failed: {} ({})",
                image.index, e.message, e.code
            )),
            (None, None) => output::line(format!("  #{} {:?}", image.index, image.status)),
        }
    }
    if let Some(dir) = &args.out {
        output::line(format!("saved into {}", dir.display()));
    }
    Ok(())
}

/// `creapic job status|cancel JOB_ID`.
pub async fn job(cmd: JobCommand) -> CliResult {
    let client = client()?;
    let (job, args) = match cmd {
        JobCommand::Status(args) => (client.playground().get(&args.job_id).await?, args),
        JobCommand::Cancel(args) => (client.playground().cancel(&args.job_id).await?, args),
    };
    if args.json {
        return output::json(&job);
    }
    let status = serde_json::to_value(job.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    output::line(format!(
        "job {}: {status} ({} of {} images completed, {} failed)",
        args.job_id, job.completed_images, job.total_images, job.failed_images
    ));
    Ok(())
}
