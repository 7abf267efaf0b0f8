//! The integrator's commands, through `creapic-client`: `generate` one image, `bulk` jobs with a
//! progress bar, `render` a scene, `job list|status|cancel`, `image get`, `balance` and `usage`.
//! Each reads `--api-key` / `--base-url`, else `AI_MEDIA_MAKER_API_KEY` (or `CREAPIC_API_KEY`)
//! and `CREAPIC_BASE_URL`, exactly as an integration would.

use std::path::Path;
use std::time::Duration;

use creapic_client::resources::{CreditsPage, UsageRange};
use creapic_client::wire::{
    AspectRatioWire, GenerateImageRequest, ImageSource, QualityWire, SceneRenderRequest,
};
use creapic_client::{Client, WaitOptions};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{
    ApiArgs, BalanceArgs, BulkArgs, CliError, CliResult, GenerateArgs, ImageCommand, JobCommand,
    JobListArgs, RenderArgs, UsageArgs,
};
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

/// The client for `api`'s flags, the environment filling what they leave out.
fn client(api: &ApiArgs) -> CliResult<Client> {
    if api.api_key.is_none() && api.base_url.is_none() {
        return Client::from_env().map_err(CliError::from);
    }
    let mut builder = Client::builder().env();
    if let Some(key) = &api.api_key {
        builder = builder.api_key_text(key.clone());
    }
    if let Some(url) = &api.base_url {
        builder = builder.base_url(url.clone());
    }
    let client = builder.build()?;
    if !client.has_api_key() {
        return Err(CliError::usage(
            "no API key: pass --api-key or set AI_MEDIA_MAKER_API_KEY",
        ));
    }
    Ok(client)
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
    write(path, &file.bytes)
}

fn write(path: &Path, bytes: &[u8]) -> CliResult {
    std::fs::write(path, bytes)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}

pub async fn generate(api: &ApiArgs, args: GenerateArgs) -> CliResult {
    let aspect: AspectRatioWire = parse_enum(
        "--aspect-ratio",
        &args.aspect_ratio,
        "1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9",
    )?;
    let quality: QualityWire = parse_enum("--quality", &args.quality, "standard, hd")?;
    if args.text.trim().is_empty() {
        return Err(CliError::usage("the text must not be empty"));
    }
    let client = client(api)?;
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

pub async fn bulk(api: &ApiArgs, args: BulkArgs) -> CliResult {
    if args.prompts.len() > 100 {
        return Err(CliError::usage("at most 100 prompts per job"));
    }
    let client = client(api)?;
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
                // Named by index, with the extension of what the server sent.
                let file = client.media().download(url).await?;
                let name = format!("{:03}.{}", image.index, file.extension());
                write(&dir.join(name), &file.bytes)?;
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

/// `creapic job list|status|cancel`.
pub async fn job(api: &ApiArgs, cmd: JobCommand) -> CliResult {
    let client = client(api)?;
    let (job, args) = match cmd {
        JobCommand::List(args) => return job_list(&client, args).await,
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

/// The wire name of an enum value (`completed`, `bulk`, …).
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `creapic job list`: up to `--limit` jobs and renders, following pages.
async fn job_list(client: &Client, args: JobListArgs) -> CliResult {
    let page_size = args.limit.min(1000);
    let jobs = client
        .playground()
        .jobs(page_size)
        .take(args.limit as usize)
        .await?;
    if args.json {
        return output::json(&jobs);
    }
    if jobs.is_empty() {
        output::line("no jobs");
    }
    for job in &jobs {
        output::line(format!(
            "{}  {:<5} {:<9} {}/{} done, {} failed, {} canceled  {}",
            job.job_id,
            wire_name(&job.kind),
            wire_name(&job.status),
            job.completed_images,
            job.total_images,
            job.failed_images,
            job.canceled_images,
            job.created_at
        ));
    }
    Ok(())
}

/// `creapic render TEXT`: a scene with a background from text; `--wait` / `--out` follow it.
pub async fn render(api: &ApiArgs, args: RenderArgs) -> CliResult {
    let aspect: AspectRatioWire = parse_enum(
        "--aspect-ratio",
        &args.aspect_ratio,
        "1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9",
    )?;
    let quality: QualityWire = parse_enum("--quality", &args.quality, "standard, hd")?;
    if args.text.trim().is_empty() {
        return Err(CliError::usage("the text must not be empty"));
    }
    let client = client(api)?;
    let request = SceneRenderRequest {
        background: ImageSource::Text { text: args.text },
        layers: Vec::new(),
        aspect_ratio: aspect,
        quality,
        organization_id: None,
    };
    let accepted = client.scenes().render(request).await?;
    let render = if args.wait || args.out.is_some() {
        let options = WaitOptions {
            max_wait: Duration::from_secs(30 * 60),
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        };
        client
            .scenes()
            .wait_for_render(&accepted.render.id, options)
            .await?
    } else {
        accepted.render
    };
    if let (Some(out), Some(url)) = (&args.out, &render.image_url) {
        save(&client, url, out).await?;
    }
    if args.json {
        return output::json(&render);
    }
    output::line(format!(
        "render {}: {}",
        render.id,
        wire_name(&render.status)
    ));
    output::line(format!(
        "tokens     {} reserved, {} used",
        render.tokens_reserved, render.tokens_used
    ));
    if let Some(e) = &render.error {
        output::line(format!("failed     {} ({})", e.message, e.code));
    }
    match (&args.out, &render.image_url) {
        (Some(out), Some(_)) => output::line(format!("saved      {}", out.display())),
        (_, Some(url)) => output::line(format!("image      {url}")),
        _ => {}
    }
    Ok(())
}

/// `creapic image get ID`.
pub async fn image(api: &ApiArgs, cmd: ImageCommand) -> CliResult {
    let ImageCommand::Get { id, out, json } = cmd;
    let client = client(api)?;
    let found = client.images().get(&id).await?;
    if let (Some(out), Some(url)) = (&out, &found.image_url) {
        save(&client, url, out).await?;
    }
    if json {
        return output::json(&found);
    }
    let g = &found.generation;
    output::line(format!("generation {}: {}", g.id, wire_name(&g.status)));
    output::line(format!("created    {}", g.created_at));
    output::line(format!("tokens     {}", g.tokens_used));
    if let Some(url) = &found.image_url {
        output::line(format!("image      {url}"));
    }
    if let Some(out) = &out {
        output::line(format!("saved      {}", out.display()));
    }
    Ok(())
}

/// `creapic balance`: what the key's organization has, and with `--ledger` how it got there.
pub async fn balance(api: &ApiArgs, args: BalanceArgs) -> CliResult {
    let client = client(api)?;
    let credits = client.credits().get(&CreditsPage::default()).await?;
    let entries = if args.ledger {
        Some(client.credits().entries(1000).take(1000).await?)
    } else {
        None
    };
    if args.json {
        let mut value = serde_json::json!({
            "organizationId": credits.organization_id,
            "balance": credits.balance,
            "held": credits.held,
        });
        if let Some(entries) = &entries {
            value["entries"] = serde_json::to_value(entries)
                .map_err(|e| CliError::new(format!("could not encode the output: {e}")))?;
        }
        return output::json(&value);
    }
    output::line(format!("organization {}", credits.organization_id));
    output::line(format!("balance      {} tokens", credits.balance));
    output::line(format!(
        "held         {} tokens (work in progress)",
        credits.held
    ));
    for e in entries.iter().flatten() {
        output::line(format!(
            "  {}  {:<7} {:>+8}  balance {}",
            e.created_at,
            wire_name(&e.entry_type),
            e.delta,
            e.balance_after
        ));
    }
    Ok(())
}

/// `creapic usage`: tokens per UTC day.
pub async fn usage(api: &ApiArgs, args: UsageArgs) -> CliResult {
    let client = client(api)?;
    let range = UsageRange {
        from: args.from,
        to: args.to,
    };
    let usage = client.credits().usage(&range).await?;
    if args.json {
        return output::json(&usage);
    }
    output::line(format!(
        "{} to {}: {} tokens spent",
        usage.from, usage.to, usage.spent
    ));
    for day in usage
        .days
        .iter()
        .filter(|d| d.spent + d.granted + d.released > 0)
    {
        output::line(format!(
            "  {}  spent {:>6}  granted {:>6}  released {:>6}",
            day.date, day.spent, day.granted, day.released
        ));
    }
    Ok(())
}
