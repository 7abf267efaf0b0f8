//! `client.playground()`: bulk image jobs as the 001 document specifies them —
//! `POST /api/playground/images` (1 credit per image, all or nothing) and
//! `GET /api/playground/images/{jobId}` — plus [`Playground::wait_for_job`], which polls until
//! the job is finished, the listing of jobs and renders (with a paginator), and cancel.

use creapic_core::wire::{
    BulkImagesRequest, BulkImagesResponse, JobStatusResponse, ListJobsResponse,
};
use reqwest::Method;

use crate::client::{Auth, Call, Client, PostCall};
use crate::paginate::Paginator;
use crate::wait::{Acceptance, Progress, Wait, WaitOptions};

/// Bulk image jobs.
#[derive(Debug, Clone, Copy)]
pub struct Playground<'a> {
    client: &'a Client,
}

impl<'a> Playground<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Playground { client }
    }

    /// Starts a job generating one image per prompt (1–100 prompts). The credits for every
    /// image are reserved at once — or none, with `insufficient_credits` — and images that fail
    /// are refunded. Answers with the job id to poll.
    pub fn create<I, S>(&self, prompts: I) -> PostCall<'a, BulkImagesResponse>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let url = self.client.endpoint(&["api", "playground", "images"]);
        let body = BulkImagesRequest {
            prompts: prompts.into_iter().map(Into::into).collect(),
            organization_id: None,
        };
        self.client.post(url, Auth::ApiKey, &body)
    }

    /// One page of the organization's bulk jobs and scene renders, oldest first, without their
    /// prompts or images (`cursor`: the previous page's `nextCursor`; `limit`: 1–1000, server
    /// default 50). The key needs `IMAGE_GENERATION` or `SCENE_RENDER`.
    pub fn list(&self, cursor: Option<&str>, limit: Option<u32>) -> Call<'a, ListJobsResponse> {
        let mut url = self.client.endpoint(&["api", "playground", "images"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(cursor) = cursor {
                q.append_pair("cursor", cursor);
            }
            if let Some(limit) = limit {
                q.append_pair("limit", &limit.to_string());
            }
        }
        let spec = self.client.spec(Method::GET, url, Auth::ApiKey);
        self.client.json_call(Ok(spec))
    }

    /// Every job and render, page by page (`page_size` each, 1–1000), following `nextCursor`.
    pub fn jobs(&self, page_size: u32) -> Paginator<'a, ListJobsResponse> {
        let handle = *self;
        Paginator::new(move |cursor| handle.list(cursor, Some(page_size)))
    }

    /// The job's status and every image so far.
    pub fn get(&self, job_id: &str) -> Call<'a, JobStatusResponse> {
        let spec = super::path_id("job_id", job_id).map(|()| {
            let url = self
                .client
                .endpoint(&["api", "playground", "images", job_id]);
            self.client.spec(Method::GET, url, Auth::ApiKey)
        });
        self.client.json_call(spec)
    }

    /// Cancels the job: items not started are never started and their credits are released;
    /// finished images stay. Canceling a canceled job returns it again; a job that already
    /// finished is a 409 (`invalid_state`). Retried with its own `Idempotency-Key`, as every POST.
    pub fn cancel(&self, job_id: &str) -> PostCall<'a, JobStatusResponse> {
        let url = self
            .client
            .endpoint(&["api", "playground", "images", job_id, "cancel"]);
        self.client.post(url, Auth::ApiKey, &serde_json::json!({}))
    }

    /// Polls the job until it is `completed`, `partial`, `failed` or `canceled`, and returns its
    /// final status (check `status`: a finished job is not necessarily a successful one). Fails
    /// with [`crate::Error::ExceededMaxWait`] when `options.max_wait` runs out first.
    pub fn wait_for_job(&self, job_id: &str, options: WaitOptions) -> Wait<'a, JobStatusResponse> {
        let handle = *self;
        let job_id = job_id.to_owned();
        Wait::new(
            self.client.time(),
            options,
            move || handle.get(&job_id).send(),
            accept_job,
        )
    }
}

fn accept_job(job: &JobStatusResponse) -> Acceptance {
    let progress = Progress {
        completed: job.completed_images,
        failed: job.failed_images,
        total: job.total_images,
    };
    if job.status.is_terminal() {
        Acceptance::Done(progress)
    } else {
        Acceptance::Pending(progress)
    }
}
