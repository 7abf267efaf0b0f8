//! The conformance suite: one public async function per behaviour every store must show.
//!
//! Each function takes a fresh store and panics with a message naming the broken promise. The
//! [`conformance_suite!`](crate::conformance_suite) macro turns the list below into tests; a new
//! behaviour is added in both places. Concurrency tests use many tasks on a multi-threaded
//! runtime against one organization, because that is where atomicity bugs show.
//!
//! The behaviours live in one file per topic (`accounts`, `orgs`, `keys`, `ledger`, `holds`, `jobs`, `audit`,
//! `idempotency`, `limits`, `generations`) and are re-exported here, so the macro and any caller
//! name each one `conformance::<behaviour>`; the helpers below (`ok`, `amount`, `idem`, `worker`,
//! `new_job`, `finish`) are shared by them all.

mod accounts;
mod audit;
mod generations;
mod holds;
mod idempotency;
mod jobs;
mod keys;
mod ledger;
mod limits;
mod orgs;

// Every behaviour, at the path the macro calls.
pub use accounts::*;
pub use audit::*;
pub use generations::*;
pub use holds::*;
pub use idempotency::*;
pub use jobs::*;
pub use keys::*;
pub use ledger::*;
pub use limits::*;
pub use orgs::*;

use crate::id::{JobId, OrgId};
use crate::job::{FinishItem, ItemError, ItemOutcome, JobKind, NewJob, WorkerId};
use crate::key::KeyMode;
use crate::ledger::{Credits, IdempotencyKey};
use crate::testing::Fixture;

/// Expands to one `#[tokio::test]` per conformance behaviour. `$factory` is a path to an
/// `async fn() -> Arc<dyn Store>` returning a fresh, empty store (or one whose other tenants the
/// tests never see). The caller needs `tokio` (with `macros` and `rt-multi-thread`) as a
/// dev-dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@each $factory;
            users_upsert_by_email,
            orgs_have_their_creator_as_owner,
            roles_can_be_changed_and_audited,
            members_and_organizations_are_listed_paged_and_removed,
            membership_writes_recheck_roles_in_their_transaction,
            the_last_owner_is_never_demoted_or_removed,
            concurrent_demotions_always_leave_an_owner,
            keys_insert_find_list_and_hide_nothing_else,
            key_digests_and_ids_are_unique,
            key_delete_is_soft_idempotent_and_audited,
            keys_of_one_org_are_invisible_to_another,
            key_usage_is_recorded_in_one_batch_and_never_regresses,
            ledger_grant_and_debit_keep_balance_equal_to_entries,
            ledger_debit_is_all_or_nothing,
            ledger_replays_return_the_first_result,
            ledger_reused_key_with_other_parameters_conflicts,
            ledger_idempotency_is_scoped_per_org,
            ledger_holds_capture_and_release,
            ledger_holds_belong_to_their_org,
            ledger_stale_holds_are_open_unpaid_and_old,
            ledger_grant_respects_the_balance_limit,
            ledger_entries_page_in_order,
            ledger_held_counts_open_holds_only,
            ledger_usage_sums_each_utc_day,
            ledger_totals_list_every_organization_in_pages,
            concurrent_debits_and_holds_never_overdraw,
            concurrent_replays_charge_once,
            concurrent_mixed_requests_are_answered_as_if_alone,
            jobs_enqueue_reserves_in_one_step,
            jobs_enqueue_replays_and_conflicts,
            jobs_enqueue_is_refused_without_credits,
            jobs_free_jobs_need_no_hold,
            jobs_queued_count_is_bounded,
            jobs_claim_lease_and_reclaim,
            jobs_handed_back_are_claimable_at_once,
            jobs_items_are_charged_exactly_once,
            jobs_complete_releases_the_rest,
            jobs_cancel_refunds_unfinished_items,
            jobs_are_invisible_to_other_orgs,
            jobs_list_counts_items_by_state,
            jobs_claims_take_turns_between_organizations,
            concurrent_claims_never_share_a_job,
            audit_queries_filter_page_and_purge,
            audit_queries_filter_by_action,
            audit_chain_links_every_append_and_survives_purge,
            idempotency_records_lock_replay_and_expire,
            key_and_org_limits_hold_under_concurrency,
            generations_round_trip,
            generations_insert_is_idempotent,
            generations_are_invisible_to_other_orgs,
            generation_ids_sort_in_creation_order,
            accounts_passwords_and_sessions_round_trip,
            accounts_sessions_are_capped_per_user,
            accounts_ended_sessions_are_purged,
        );
    };
    (@each $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store = $factory().await;
                $crate::testing::conformance::$name(store).await;
            }
        )*
    };
}

fn ok<T>(r: crate::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e} ({})", e.code()),
    }
}

fn amount(n: u64) -> Credits {
    ok(Credits::amount(n), "amount")
}

fn idem(k: &str) -> IdempotencyKey {
    ok(IdempotencyKey::new(k), "idempotency key")
}

fn worker(name: &str) -> WorkerId {
    ok(WorkerId::new(name), "worker id")
}

fn new_job(f: &Fixture, org: OrgId, prompts: usize, unit: u64, key: &str) -> NewJob {
    NewJob {
        id: JobId::generate(f.now, f.rng.as_ref()),
        org,
        key: None,
        kind: JobKind::Bulk,
        mode: KeyMode::Live,
        inputs: (0..prompts).map(|i| format!("prompt {i}")).collect(),
        unit_cost: ok(Credits::new(unit), "unit"),
        idempotency_key: idem(key),
        hold_entry: f.entry_id(),
        at: f.now,
    }
}

fn finish(f: &Fixture, job: JobId, w: &WorkerId, index: u32, success: bool) -> FinishItem {
    FinishItem {
        job,
        worker: w.clone(),
        index,
        outcome: if success {
            ItemOutcome::Succeeded {
                output: format!("media/{job}/{index}.png"),
            }
        } else {
            ItemOutcome::Failed(ItemError::new("provider_error", "the provider failed"))
        },
        entry_id: f.entry_id(),
        at: f.now,
    }
}
