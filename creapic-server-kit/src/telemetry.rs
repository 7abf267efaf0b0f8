//! The kit's metric names and histogram buckets, in one place, and the Prometheus builder that
//! applies them ([`prometheus_builder`]).
//!
//! Design decision: **histograms with fixed buckets, not summaries.** The Prometheus exporter
//! renders a histogram as a summary (quantiles of this process only) unless it is given
//! buckets, and quantiles of several replicas cannot be added up. With buckets, a dashboard sums
//! `…_bucket` series over replicas and computes any quantile with `histogram_quantile`. Each
//! list spans what its operation really takes, with about three buckets per decade: enough
//! resolution to see a regression, few enough series per label set (bucket count + 2).
//!
//! A host that installs its own recorder calls [`prometheus_builder`] (or applies
//! [`HISTOGRAM_BUCKETS`] itself) so `/metrics` gets the same buckets.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// `creapic_http_request_duration_seconds{route,method}`: one request's time in the kit, from
/// routing to the response head (recorded by the HTTP tree's per-route layer).
pub const HTTP_REQUEST_DURATION: &str = "creapic_http_request_duration_seconds";
/// `creapic_generation_duration_seconds{provider}`: one call of an image provider, retries
/// included, whatever its outcome.
pub const GENERATION_DURATION: &str = "creapic_generation_duration_seconds";
/// `creapic_ledger_apply_duration_seconds{op}`: one ledger call of the kit to the core (`op`:
/// `reserve`, `capture`, `release` for synchronous generations; `submit_job`, `finish_item`,
/// `complete_job` for jobs).
pub const LEDGER_APPLY_DURATION: &str = "creapic_ledger_apply_duration_seconds";
/// `creapic_jobs_queued`: jobs waiting for a runner, across every replica (a bounded count,
/// see [`JOBS_QUEUED_COUNT_MAX`], read by the upkeep every metrics period).
pub const JOBS_QUEUED: &str = "creapic_jobs_queued";
/// `creapic_runner_slots_in_use`: generations this process's runner has in flight (out of its
/// `concurrency_max`).
pub const RUNNER_SLOTS_IN_USE: &str = "creapic_runner_slots_in_use";

/// The most queued jobs [`JOBS_QUEUED`] counts: past it the gauge reads this (the queue is
/// "very long" either way), and the count stays a bounded index scan.
pub const JOBS_QUEUED_COUNT_MAX: u32 = 1000;

/// Buckets of [`HTTP_REQUEST_DURATION`], in seconds: 1 ms … 10 s. A warm status read answers
/// in well under a millisecond on the first bucket; a synchronous generation lands in the
/// seconds.
pub const HTTP_REQUEST_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of [`GENERATION_DURATION`], in seconds: 50 ms … 300 s. The offline renderer takes
/// tens of milliseconds; live providers take seconds and give up at the kit's generation
/// deadline (minutes).
pub const GENERATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets of [`LEDGER_APPLY_DURATION`], in seconds: 0.1 ms … 1 s. The memory store answers in
/// microseconds, SQLite's group commit in about a millisecond, PostgreSQL in a round trip or
/// two; past a second the database is in trouble.
pub const LEDGER_APPLY_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Every histogram of the kit with its buckets.
pub const HISTOGRAM_BUCKETS: [(&str, &[f64]); 3] = [
    (HTTP_REQUEST_DURATION, &HTTP_REQUEST_BUCKETS),
    (GENERATION_DURATION, &GENERATION_BUCKETS),
    (LEDGER_APPLY_DURATION, &LEDGER_APPLY_BUCKETS),
];

/// A Prometheus builder with the kit's buckets set ([`HISTOGRAM_BUCKETS`]), for a host to
/// install (`prometheus_builder()?.install_recorder()`) and hand the handle to the service
/// builder's `metrics`.
pub fn prometheus_builder() -> Result<PrometheusBuilder, BuildError> {
    HISTOGRAM_BUCKETS
        .iter()
        .try_fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
            builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
        })
}

/// Runs one ledger call of the kit to the core (`op` names it) and records its duration in
/// [`LEDGER_APPLY_DURATION`] (a no-op without a recorder).
pub(crate) async fn ledger_timed<T>(
    op: &'static str,
    call: impl std::future::Future<Output = T>,
) -> T {
    let started = std::time::Instant::now();
    let out = call.await;
    metrics::histogram!(LEDGER_APPLY_DURATION, "op" => op).record(started.elapsed().as_secs_f64());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_rise_and_span_their_documented_ranges() {
        let ranges = [(0.001, 10.0), (0.05, 300.0), (0.0001, 1.0)];
        for ((name, buckets), (first, last)) in HISTOGRAM_BUCKETS.iter().zip(ranges) {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name} rises");
            assert_eq!(buckets.first(), Some(&first), "{name}");
            assert_eq!(buckets.last(), Some(&last), "{name}");
        }
        assert!(prometheus_builder().is_ok());
    }
}
