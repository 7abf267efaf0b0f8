//! The Playground page: a signed-in member of an organization (any role) runs bulk jobs — prompts
//! one per line, up to `Limits::prompts_max` — and watches them on the job's page (progress
//! "n of m done", the images as thumbnails that open full size through signed media links,
//! failed items with their reason, "Cancel" while it runs), and generates one image from text,
//! shown with the credits it cost and the composed JSON prompt.
//!
//! Who pays is a [`Caller::Member`]: no API key is involved or faked. The core checks the
//! membership on every call and pays the same way as for a key — jobs through `submit_job` /
//! `cancel_job`, one image through [`PaidGenerator`] — so nothing here touches the ledger.
//!
//! Design decision — **a form is sent once**: each rendered form carries a random one-time
//! form id (hidden field `form`, [`csrf::new_form_id`]), and the submission's
//! idempotency key is `console:{user}:{nonce}` ([`attempt_key`]): the job's idempotency key for a
//! bulk job, the attempt's ledger key ([`AttemptKeys`]) for one image. A reload that sends the
//! form again or a double click returns the same job, or the same image, and never reserves
//! twice; a new page is a new nonce.
//!
//! Progress is plain HTML: the job's page has a "Refresh" link, and the console's script (no
//! inline code) re-fetches the progress section from [`progress`] every second while the job
//! runs and swaps it in.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use creapic_core::generation::{AspectRatio, GenerationRecord, Quality};
use creapic_core::id::{JobId, OrgId, UserId};
use creapic_core::job::{ItemStatus, Job, JobKind, JobSummary};
use creapic_core::ledger::Credits;
use creapic_core::page::PageLimit;
use creapic_core::{Caller, JobSpec};
use http::StatusCode;
use serde::Deserialize;

use crate::generation::item::ImageSpec;
use crate::generation::paid::{AttemptKeys, PaidGenerator, Resume};
use crate::http::console::csrf::{self, CheckedForm, CheckedLongForm, Fields};
use crate::http::console::frame::{Frame, OrgFrame, Section, load_org, org_param};
use crate::http::console::page::{self, When};
use crate::http::console::session::Viewer;
use crate::http::error::Error;
use crate::http::service::AppState;

/// Jobs on one page of the list (a "Next page" link follows).
pub const JOBS_SHOWN_MAX: u32 = 20;
/// Longest prompt shown under a thumbnail, in characters (the full text is the image's title).
pub const CAPTION_MAX_CHARS: usize = 160;

/// Query of `GET /console/playground`.
#[derive(Debug, Default, Deserialize)]
pub struct PlaygroundQuery {
    /// The organization (default: the person's first).
    pub org: Option<String>,
    /// The last job id of the previous page of the list.
    pub after: Option<String>,
}

/// Query of a job's page and of its progress section.
#[derive(Debug, Deserialize)]
pub struct JobQuery {
    /// The organization the job belongs to.
    pub org: String,
}

/// A choice of a `<select>`.
struct Choice {
    value: &'static str,
    selected: bool,
}

/// A job in the list.
struct JobRow {
    href: String,
    id: String,
    kind: &'static str,
    status: &'static str,
    done: u32,
    total: u32,
    created: When,
}

/// One image just generated.
struct Generated {
    id: String,
    image: Option<String>,
    tokens: String,
    balance: String,
    aspect_ratio: &'static str,
    quality: &'static str,
    prompt_json: String,
}

/// The playground page.
#[derive(Template)]
#[template(path = "console/playground.html")]
struct PlaygroundPage {
    frame: Frame,
    org: OrgFrame,
    balance: String,
    bulk_price: String,
    prompts_max: usize,
    prompt_max_chars: usize,
    prompts_maxlength: usize,
    bulk_nonce: String,
    prompts_value: String,
    bulk_error: Option<String>,
    single_nonce: String,
    prompt_value: String,
    aspect_ratios: Vec<Choice>,
    qualities: Vec<Choice>,
    single_price: String,
    single_error: Option<String>,
    generated: Option<Generated>,
    single_first: bool,
    jobs: Vec<JobRow>,
    next_page: Option<String>,
}

/// A finished image of a job.
struct Thumb {
    number: u32,
    url: String,
    prompt: String,
    caption: String,
}

/// An item that failed (or was canceled), and why.
struct Failed {
    number: u32,
    caption: String,
    reason: String,
}

/// What the progress section shows (the job page and the [`progress`] fragment).
struct Progress {
    status: &'static str,
    done: usize,
    total: usize,
    succeeded: usize,
    failed: usize,
    canceled: usize,
    charged: String,
    unit_cost: String,
    finished: bool,
    /// The fragment the script polls, while the job is not finished.
    poll: Option<String>,
    /// The job's page (the "Refresh" link).
    page: String,
    /// Where "Cancel" posts, while the job is not finished.
    cancel: Option<String>,
    org_id: String,
    thumbs: Vec<Thumb>,
    failures: Vec<Failed>,
}

/// A job's page.
#[derive(Template)]
#[template(path = "console/playground_job.html")]
struct JobPage {
    frame: Frame,
    org: OrgFrame,
    job_id: String,
    kind: &'static str,
    created: When,
    back: String,
    progress: Progress,
}

/// The progress section alone, for the script.
#[derive(Template)]
#[template(path = "console/playground_progress.html")]
struct ProgressFragment {
    frame: Frame,
    progress: Progress,
}

/// What a playground page shows beyond its forms' defaults.
#[derive(Default)]
struct Extras {
    prompts_value: String,
    bulk_error: Option<Error>,
    prompt_value: String,
    aspect_ratio: AspectRatio,
    quality: Quality,
    single_error: Option<Error>,
    generated: Option<Generated>,
}

/// `GET /console/playground?org=…`: the forms and the organization's jobs.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<PlaygroundQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return page::error(&viewer.base, &page::bad_query());
    };
    let after = match page::after(query.after.as_deref(), JobId::parse, "a job id") {
        Ok(after) => after,
        Err(e) => return page::error(&viewer.base, &e),
    };
    playground_page(
        &state,
        &viewer,
        query.org.as_deref(),
        after,
        Extras::default(),
    )
    .await
}

/// `POST /console/playground`: submits the prompts as one bulk job (the form's nonce is its
/// idempotency key) and goes to the job's page; or the page again with the error as a sentence.
pub async fn submit(State(state): State<AppState>, form: CheckedLongForm) -> Response {
    let CheckedLongForm(CheckedForm { viewer, fields }) = form;
    let org = fields.get("org").map(str::to_owned);
    let text = fields.get("prompts").unwrap_or("").to_owned();
    let submitted = async {
        let org = org_param(org.as_deref())?;
        let key = attempt_key(viewer.user, &fields)?;
        let prompts = prompts(&state, &text)?;
        let spec = JobSpec {
            kind: JobKind::Bulk,
            inputs: prompts,
            unit_cost: Credits::new(state.config().pricing.bulk_image).map_err(Error::Core)?,
        };
        let queued = crate::telemetry::ledger_timed(
            "submit_job",
            state
                .core()
                .submit_job(Caller::member(viewer.user, org), spec, &key),
        )
        .await
        .map_err(Error::Core)?;
        if !queued.replayed {
            state.notify_job();
            metrics::counter!("creapic_jobs_submitted_total", "kind" => "bulk").increment(1);
        }
        Ok::<_, Error>((org, queued.job.id))
    }
    .await;
    match submitted {
        Ok((org, job)) => page::redirect(&job_href(&viewer.base, org, job)),
        Err(e) => {
            let extras = Extras {
                prompts_value: text,
                bulk_error: Some(e),
                ..Extras::default()
            };
            playground_page(&state, &viewer, org.as_deref(), None, extras).await
        }
    }
}

/// `POST /console/playground/generate`: one image from text, paid through [`PaidGenerator`]
/// under the form's nonce, shown with the credits it cost and the composed JSON prompt.
pub async fn generate(State(state): State<AppState>, form: CheckedLongForm) -> Response {
    let CheckedLongForm(CheckedForm { viewer, fields }) = form;
    let org = fields.get("org").map(str::to_owned);
    let text = fields.get("prompt").unwrap_or("").to_owned();
    let aspect_ratio = fields
        .get("aspect_ratio")
        .and_then(|a| AspectRatio::parse(a).ok())
        .unwrap_or_default();
    let quality = fields
        .get("quality")
        .and_then(|q| Quality::parse(q).ok())
        .unwrap_or_default();
    let made = async {
        let org = org_param(org.as_deref())?;
        let key = attempt_key(viewer.user, &fields)?;
        let source = crate::http::handlers::images::prompt_source(
            creapic_core::wire::ImageSource::Text { text: text.clone() },
            state.config().limits.prompt_max_chars,
        )?;
        let spec = ImageSpec {
            source,
            aspect_ratio,
            quality,
        };
        let caller = Caller::member(viewer.user, org);
        // The membership first: an outsider learns nothing, not even the media quota.
        state
            .core()
            .check_caller(&caller)
            .await
            .map_err(Error::Core)?;
        state
            .media()
            .check_quota(org, 1)
            .await
            .map_err(Error::Generation)?;
        let config = state.config();
        let paid = PaidGenerator::new(
            state.core(),
            state.pipeline(),
            config.pricing,
            config.limits,
        )
        .generate(caller, &spec, &AttemptKeys::new(key), Resume::Resumable)
        .await
        .map_err(|failure| Error::Generation(failure.into_parts().0))?;
        Ok::<_, Error>(generated(&state, &paid.record, paid.balance))
    }
    .await;
    let extras = match made {
        Ok(shown) => Extras {
            prompt_value: text,
            aspect_ratio,
            quality,
            generated: Some(shown),
            ..Extras::default()
        },
        Err(e) => Extras {
            prompt_value: text,
            aspect_ratio,
            quality,
            single_error: Some(e),
            ..Extras::default()
        },
    };
    playground_page(&state, &viewer, org.as_deref(), None, extras).await
}

/// `GET /console/playground/jobs/{id}?org=…`: a job's page.
pub async fn job(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    query: Result<Query<JobQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return page::error(&viewer.base, &page::bad_query());
    };
    let org = match load_org(&state, &viewer, Some(&query.org), Section::Playground).await {
        Ok(org) => org,
        Err(answer) => return answer,
    };
    let found = async {
        let id = job_param(&id)?;
        state
            .core()
            .job(Caller::member(viewer.user, org.org), id)
            .await
            .map_err(Error::Core)
    }
    .await;
    let job = match found {
        Ok(job) => job,
        Err(e) => return page::error(&viewer.base, &e),
    };
    let base = viewer.base.as_str();
    page::render(
        StatusCode::OK,
        &JobPage {
            frame: Frame::of(&viewer),
            job_id: job.id.to_string(),
            kind: kind_label(job.kind),
            created: When::of(job.created_at),
            back: format!("{base}/playground?org={}", org.id),
            progress: progress_of(&state, base, &job),
            org,
        },
    )
}

/// `GET /console/playground/jobs/{id}/progress?org=…`: the progress section alone, what the
/// console's script swaps in every second while the job runs.
pub async fn progress(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    query: Result<Query<JobQuery>, QueryRejection>,
) -> Response {
    let found = async {
        let Ok(Query(query)) = query else {
            return Err(page::bad_query());
        };
        let org = org_param(Some(&query.org))?;
        let id = job_param(&id)?;
        state
            .core()
            .job(Caller::member(viewer.user, org), id)
            .await
            .map_err(Error::Core)
    }
    .await;
    match found {
        Ok(job) => page::render(
            StatusCode::OK,
            &ProgressFragment {
                progress: progress_of(&state, &viewer.base, &job),
                frame: Frame::of(&viewer),
            },
        ),
        Err(e) => page::error(&viewer.base, &e),
    }
}

/// `POST /console/playground/jobs/{id}/cancel`: cancels the job (unfinished items refunded)
/// and goes back to its page.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CheckedForm,
) -> Response {
    let CheckedForm { viewer, fields } = form;
    let canceled = async {
        let org = org_param(fields.get("org"))?;
        let id = job_param(&id)?;
        let job = state
            .core()
            .cancel_job(Caller::member(viewer.user, org), id)
            .await
            .map_err(Error::Core)?;
        Ok::<_, Error>((org, job.id))
    }
    .await;
    match canceled {
        Ok((org, job)) => page::redirect(&job_href(&viewer.base, org, job)),
        Err(e) => page::error(&viewer.base, &e),
    }
}

/// The idempotency key of the form's submission: `console:{user}:{form id}` (see the module
/// documentation); a missing or malformed form id is 400.
fn attempt_key(user: UserId, fields: &Fields) -> Result<String, Error> {
    let id = csrf::form_id(fields).ok_or(Error::InvalidParameter {
        name: "form",
        message: "is missing or malformed: reload the page and send the form again".into(),
    })?;
    Ok(format!("console:{user}:{id}"))
}

/// The prompts of the textarea: one per non-blank line, trimmed; at least one, at most
/// `Limits::prompts_max`, each at most `Limits::prompt_max_chars` characters.
fn prompts(state: &AppState, text: &str) -> Result<Vec<String>, Error> {
    let limits = state.config().limits;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if prompts.is_empty() {
        return Err(Error::Core(creapic_core::Error::invalid(
            "prompts",
            "write at least one prompt, one per line",
        )));
    }
    if prompts.len() > limits.prompts_max {
        return Err(Error::Core(creapic_core::Error::LimitExceeded {
            what: "prompts per job",
            max: limits.prompts_max as u64,
        }));
    }
    if prompts
        .iter()
        .any(|p| crate::http::handlers::too_long(p, limits.prompt_max_chars))
    {
        return Err(Error::Core(creapic_core::Error::LimitExceeded {
            what: "prompt length in characters",
            max: limits.prompt_max_chars as u64,
        }));
    }
    Ok(prompts)
}

fn job_param(text: &str) -> Result<JobId, Error> {
    JobId::parse(text).map_err(|_| Error::InvalidParameter {
        name: "job",
        message: "must be a job id".into(),
    })
}

fn job_href(base: &str, org: OrgId, job: JobId) -> String {
    format!("{base}/playground/jobs/{job}?org={org}")
}

fn kind_label(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Bulk => "Bulk images",
        JobKind::Scene => "Scene render",
    }
}

/// `n` credits, as a page says it: "1 credit", "3 credits" (the 001 document's word).
fn credits(n: u64) -> String {
    if n == 1 {
        "1 credit".to_owned()
    } else {
        format!("{n} credits")
    }
}

/// `text` cut to [`CAPTION_MAX_CHARS`] characters, with an ellipsis when cut.
fn caption(text: &str) -> String {
    match text.char_indices().nth(CAPTION_MAX_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// What the progress section shows of `job`, its images linked through fresh signed links.
fn progress_of(state: &AppState, base: &str, job: &Job) -> Progress {
    let window = state.link_window();
    let org_id = job.org.to_string();
    let page = job_href(base, job.org, job.id);
    let finished = job.status.is_terminal();
    let count = |s: ItemStatus| job.items.iter().filter(|i| i.status == s).count();
    let succeeded = count(ItemStatus::Succeeded);
    let thumbs = job
        .items
        .iter()
        .filter(|i| i.status == ItemStatus::Succeeded)
        .filter_map(|i| {
            let url = state.output_url_in(window, job.org, i.output.as_deref()?)?;
            Some(Thumb {
                number: i.index + 1,
                url,
                prompt: i.input.clone(),
                caption: caption(&i.input),
            })
        })
        .collect();
    let failures = job
        .items
        .iter()
        .filter(|i| matches!(i.status, ItemStatus::Failed | ItemStatus::Canceled))
        .map(|i| Failed {
            number: i.index + 1,
            caption: caption(&i.input),
            reason: match (&i.error, i.status) {
                (Some(e), _) => e.message.clone(),
                (None, ItemStatus::Canceled) => {
                    "Canceled before it was drawn; its credits were refunded.".to_owned()
                }
                (None, _) => "Failed; its credits were refunded.".to_owned(),
            },
        })
        .collect();
    Progress {
        status: job.status.as_str(),
        done: job.items.len() - job.pending(),
        total: job.items.len(),
        succeeded,
        failed: count(ItemStatus::Failed),
        canceled: count(ItemStatus::Canceled),
        charged: credits(job.unit_cost.get().saturating_mul(succeeded as u64)),
        unit_cost: credits(job.unit_cost.get()),
        finished,
        poll: (!finished)
            .then(|| format!("{base}/playground/jobs/{}/progress?org={org_id}", job.id)),
        cancel: (!finished).then(|| format!("{base}/playground/jobs/{}/cancel", job.id)),
        page,
        org_id,
        thumbs,
        failures,
    }
}

/// A generation as the page shows it: its image through a fresh link, what it cost, the
/// balance after, and the JSON prompt it was drawn from, pretty-printed.
fn generated(state: &AppState, record: &GenerationRecord, balance: Credits) -> Generated {
    let (view, image) = crate::http::views::generation(state, record);
    Generated {
        id: view.id,
        image,
        tokens: credits(record.outcome.tokens().get()),
        balance: credits(balance.get()),
        aspect_ratio: record.aspect_ratio.as_str(),
        quality: record.quality.as_str(),
        prompt_json: serde_json::to_string_pretty(&view.prompt).unwrap_or(record.prompt.clone()),
    }
}

fn row(base: &str, job: &JobSummary) -> JobRow {
    JobRow {
        href: job_href(base, job.org, job.id),
        id: job.id.to_string(),
        kind: kind_label(job.kind),
        status: job.status.as_str(),
        done: job.items - job.pending(),
        total: job.items,
        created: When::of(job.created_at),
    }
}

/// Renders the playground of `org` (default: the viewer's first organization) with `extras`;
/// its status is the error's, if there is one.
async fn playground_page(
    state: &AppState,
    viewer: &Viewer,
    org: Option<&str>,
    after: Option<JobId>,
    extras: Extras,
) -> Response {
    let org = match load_org(state, viewer, org, Section::Playground).await {
        Ok(org) => org,
        Err(answer) => return answer,
    };
    let base = viewer.base.as_str();
    let loaded = async {
        let caller = Caller::member(viewer.user, org.org);
        let limit = PageLimit::new(JOBS_SHOWN_MAX).map_err(Error::Core)?;
        let jobs = state
            .core()
            .list_jobs(caller, after, limit)
            .await
            .map_err(Error::Core)?;
        let balance = state.core().balance(org.org).await.map_err(Error::Core)?;
        Ok::<_, Error>((jobs, balance))
    }
    .await;
    let (jobs, balance) = match loaded {
        Ok(found) => found,
        Err(e) => return page::error(base, &e),
    };
    let config = state.config();
    let status = match (&extras.bulk_error, &extras.single_error) {
        (Some(e), _) | (None, Some(e)) => e.status(),
        (None, None) => StatusCode::OK,
    };
    let pricing = config.pricing;
    let single_first = extras.generated.is_some() || extras.single_error.is_some();
    page::render(
        status,
        &PlaygroundPage {
            balance: credits(balance.get()),
            bulk_price: credits(pricing.bulk_image),
            prompts_max: config.limits.prompts_max,
            prompt_max_chars: config.limits.prompt_max_chars,
            prompts_maxlength: config
                .limits
                .prompts_max
                .saturating_mul(config.limits.prompt_max_chars.saturating_add(2)),
            bulk_nonce: csrf::new_form_id(),
            prompts_value: extras.prompts_value,
            bulk_error: extras.bulk_error.as_ref().map(page::sentence),
            single_nonce: csrf::new_form_id(),
            prompt_value: extras.prompt_value,
            aspect_ratios: AspectRatio::ALL
                .into_iter()
                .map(|a| Choice {
                    value: a.as_str(),
                    selected: a == extras.aspect_ratio,
                })
                .collect(),
            qualities: [Quality::Standard, Quality::Hd]
                .into_iter()
                .map(|q| Choice {
                    value: q.as_str(),
                    selected: q == extras.quality,
                })
                .collect(),
            single_price: format!(
                "standard {}, hd {}",
                credits(pricing.image_standard),
                credits(pricing.image_hd)
            ),
            single_first,
            single_error: extras.single_error.as_ref().map(page::sentence),
            generated: extras.generated,
            next_page: jobs
                .next
                .map(|last| format!("{base}/playground?org={}&after={last}", org.id)),
            jobs: jobs.items.iter().map(|j| row(base, j)).collect(),
            frame: Frame::of(viewer),
            org,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_is_keyed_by_its_person_and_its_forms_nonce() {
        let user = UserId::parse("0190f0f0-0000-7000-8000-000000000001").unwrap();
        let fresh = csrf::new_form_id();
        assert_eq!(fresh.len(), csrf::FORM_ID_LEN);
        assert_ne!(fresh, csrf::new_form_id(), "a new page, a new form id");
        let form = Fields::parse(format!("form={fresh}").as_bytes()).unwrap();
        assert_eq!(
            attempt_key(user, &form).unwrap(),
            format!("console:{user}:{fresh}")
        );
        for bad in ["", "form=abc", "form=ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"] {
            let form = Fields::parse(bad.as_bytes()).unwrap();
            assert!(attempt_key(user, &form).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn captions_are_cut_and_tokens_counted() {
        assert_eq!(caption("short"), "short");
        let long = "é".repeat(CAPTION_MAX_CHARS + 5);
        let cut = caption(&long);
        assert_eq!(cut.chars().count(), CAPTION_MAX_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(credits(1), "1 credit");
        assert_eq!(credits(3), "3 credits");
    }
}
