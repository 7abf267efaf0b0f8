//! The client's reads of its own organization against a real server, on SQLite and on
//! PostgreSQL: the balance and held tokens before and after work, every ledger entry through
//! the paginator (several pages), usage per day, the job listing page by page with a bound on
//! what is collected, and the typed refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{BACKENDS, server_on_backend};
use creapic_client::resources::{CreditsPage, UsageRange};
use creapic_client::wire::{JobKindWire, JobStatusWire, LedgerEntryTypeWire};
use creapic_client::{Error, ErrorCode, WaitOptions};
use creapic_core::scope::Scope;

fn fast_wait() -> WaitOptions {
    WaitOptions {
        max_wait: Duration::from_secs(30),
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_ledger_usage_and_jobs_on_every_backend() {
    for backend in BACKENDS {
        let s = server_on_backend(backend).await;
        s.grant(s.org, 100).await;
        let key = s.key(&[Scope::ImageGeneration, Scope::SceneRender]).await;
        let client = s.client(&key);

        // Before any work: everything granted is there, nothing held.
        let credits = client.credits().get(&CreditsPage::default()).await.unwrap();
        assert_eq!((credits.balance, credits.held), (100, 0), "{backend:?}");
        assert_eq!(credits.organization_id, s.org.to_string(), "{backend:?}");

        // Work: one image, then two bulk jobs run to the end, then a third canceled at once
        // would race the runner — instead, list what exists.
        let image = client.images().generate_text("a lighthouse").await.unwrap();
        let cost = image.generation.tokens_used;
        let mut jobs = Vec::new();
        for prompts in [vec!["a", "b"], vec!["c"], vec!["d", "e", "f"]] {
            let job = client.playground().create(prompts).await.unwrap();
            let done = client
                .playground()
                .wait_for_job(&job.job_id, fast_wait())
                .await
                .unwrap();
            assert_eq!(done.status, JobStatusWire::Completed, "{backend:?}");
            jobs.push(job.job_id);
        }
        let spent = cost + 6;

        let credits = client.credits().get(&CreditsPage::default()).await.unwrap();
        assert_eq!(
            (credits.balance, credits.held),
            (100 - spent, 0),
            "{backend:?}: finished work holds nothing"
        );

        // Every entry, three per page: the same entries as one big page, in order, with the
        // balance after the last one equal to the balance.
        let mut pages = client.credits().entries(3);
        let mut paged = Vec::new();
        let mut page_count = 0;
        while let Some(page) = pages.next_page().await.unwrap() {
            page_count += 1;
            paged.extend(page.entries);
        }
        assert!(page_count >= 3, "{backend:?}: {page_count} pages");
        let whole = client
            .credits()
            .get(&CreditsPage {
                cursor: None,
                limit: Some(1000),
            })
            .await
            .unwrap();
        assert_eq!(paged, whole.entries, "{backend:?}");
        assert_eq!(
            paged.last().map(|e| e.balance_after),
            Some(100 - spent),
            "{backend:?}"
        );
        let captured: u64 = paged
            .iter()
            .filter(|e| e.entry_type == LedgerEntryTypeWire::Capture)
            .map(|e| e.amount)
            .sum();
        assert_eq!(captured, spent, "{backend:?}: every image paid once");
        assert_eq!(
            client.credits().entries(4).collect(1000).await.unwrap(),
            whole.entries,
            "{backend:?}"
        );

        // Usage: today holds everything, spent and granted.
        let usage = client
            .credits()
            .usage(&UsageRange::default())
            .await
            .unwrap();
        assert_eq!(usage.days.len(), 30, "{backend:?}");
        let today = usage.days.last().unwrap();
        assert_eq!((today.spent, today.granted), (spent, 100), "{backend:?}");
        assert_eq!(usage.spent, spent, "{backend:?}");

        // The job listing, one per page, oldest first; a bound on what is collected.
        let listed = client.playground().jobs(1).collect(10).await.unwrap();
        assert_eq!(
            listed.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>(),
            jobs,
            "{backend:?}: ids made in different milliseconds sort by time"
        );
        assert!(listed.iter().all(|j| j.kind == JobKindWire::Bulk));
        assert_eq!(
            listed
                .iter()
                .map(|j| j.completed_images)
                .collect::<Vec<_>>(),
            vec![2, 1, 3],
            "{backend:?}"
        );
        match client.playground().jobs(1).collect(2).await {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "max_items"),
            other => panic!("{backend:?}: expected the bound, got {other:?}"),
        }

        // A key with neither generation scope may read credits but not list jobs.
        let admin_key = s.key(&[Scope::OrganizationWrite]).await;
        let admin = s.client(&admin_key);
        assert_eq!(
            admin
                .credits()
                .get(&CreditsPage::default())
                .await
                .unwrap()
                .balance,
            100 - spent
        );
        match admin.playground().list(None, None).await {
            Err(Error::Api(e)) => assert_eq!(e.code, ErrorCode::MissingScope, "{backend:?}"),
            other => panic!("{backend:?}: expected missing_scope, got {other:?}"),
        }
        // A range the server refuses arrives typed.
        match client
            .credits()
            .usage(&UsageRange {
                from: Some("2020-01-01".into()),
                to: Some("2026-01-01".into()),
            })
            .await
        {
            Err(Error::Api(e)) => assert_eq!(e.code, ErrorCode::LimitExceeded, "{backend:?}"),
            other => panic!("{backend:?}: expected limit_exceeded, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_is_canceled_through_the_client_on_every_backend() {
    use creapic_server_kit::generation::media::{MediaStore, SigningKey};
    use creapic_server_kit::generation::pipeline::Pipeline;
    for backend in BACKENDS {
        // No runner: the job stays queued until it is canceled.
        let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
        let s = common::server_on(
            backend,
            creapic_server_kit::KitConfig::default(),
            false,
            pipeline,
        )
        .await;
        s.grant(s.org, 10).await;
        let client = s.client(&s.key(&[Scope::ImageGeneration]).await);
        let job = client.playground().create(["a", "b", "c"]).await.unwrap();
        let held = client.credits().get(&CreditsPage::default()).await.unwrap();
        assert_eq!((held.balance, held.held), (7, 3), "{backend:?}");
        let canceled = client.playground().cancel(&job.job_id).await.unwrap();
        assert_eq!(canceled.status, JobStatusWire::Canceled, "{backend:?}");
        assert_eq!(canceled.credits_refunded, 3, "{backend:?}");
        let again = client.playground().cancel(&job.job_id).await.unwrap();
        assert_eq!(
            again, canceled,
            "{backend:?}: canceling twice changes nothing"
        );
        let after = client.credits().get(&CreditsPage::default()).await.unwrap();
        assert_eq!((after.balance, after.held), (10, 0), "{backend:?}");
        let listed = client.playground().jobs(10).collect(10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].status, listed[0].canceled_images),
            (JobStatusWire::Canceled, 3),
            "{backend:?}"
        );
    }
}
