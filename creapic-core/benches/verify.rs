//! Warm key verification against its physical floor, one bare SHA-256 of the same key.
//!
//! "Warm" is the steady state of a server: the key is in the verification cache. One iteration
//! parses the `Authorization` header, hashes the key, looks the digest up, checks expiry, records
//! the use time and checks a scope. The baseline hashes the same 72 bytes and nothing else. Both
//! run in the same process and the same run, so their ratio is meaningful on a noisy machine.
//! `bench/verify.sh` runs this and writes the ratio to docs/benchmarks.md.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::key::KeyMode;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::memory::MemoryStore;
use creapic_core::{CoreConfig, Creapic, KeySpec};
use criterion::{Criterion, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

/// Polls a future that must be ready at once (a warm cache hit never awaits).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a warm verification must not wait"),
    }
}

fn verification(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let config = CoreConfig {
        keys_per_org_max: 20_000,
        ..CoreConfig::default()
    };
    let core = Creapic::builder(Arc::new(MemoryStore::new()))
        .config(config)
        .build();
    let ctx = RequestContext::default();
    let header = rt.block_on(async {
        let owner = core.ensure_user("bench@example.com").await.expect("user");
        let org = core
            .create_org("Bench", owner.id, Actor::Operator, &ctx)
            .await
            .expect("org");
        // A realistic cache: 10,000 other keys of other organizations are cached too.
        for i in 0..10_000 {
            let spec = KeySpec {
                name: format!("k{i}"),
                scopes: ScopeSet::all(),
                mode: KeyMode::Live,
                expires_at: None,
            };
            let k = core
                .create_key(Actor::Operator, org.id, spec, &ctx)
                .await
                .expect("key");
            let h = format!("Bearer {}", k.secret.expose());
            core.authenticate(Some(h.as_bytes()), None)
                .await
                .expect("warm");
        }
        let spec = KeySpec {
            name: "bench".into(),
            scopes: ScopeSet::only(Scope::ImageGeneration),
            mode: KeyMode::Live,
            expires_at: None,
        };
        let key = core
            .create_key(Actor::Operator, org.id, spec, &ctx)
            .await
            .expect("key");
        let header = format!("Bearer {}", key.secret.expose());
        core.authenticate(Some(header.as_bytes()), None)
            .await
            .expect("warm up");
        header
    });
    let key_bytes = header.as_bytes()[7..].to_vec();

    let mut group = c.benchmark_group("verify");
    group.bench_function("sha256_baseline", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(&key_bytes[..]))))
    });
    group.bench_function("warm_verify_and_scope", |b| {
        b.iter(|| {
            let who = ready(core.authenticate(Some(black_box(header.as_bytes())), None))
                .expect("valid key");
            black_box(who.require(Scope::ImageGeneration)).expect("scope");
        })
    });
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
