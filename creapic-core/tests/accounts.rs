//! Console sign-in through the service: a password set, a session that signs in, resolves,
//! goes idle, expires and signs out, and failures that say nothing about which part was wrong.

use std::sync::Arc;
use std::time::Duration;

use creapic_core::account::{Password, SessionToken};
use creapic_core::clock::{ManualClock, Timestamp};
use creapic_core::random::OsRandom;
use creapic_core::store::AccountStore;
use creapic_core::store::memory::MemoryStore;
use creapic_core::{CoreConfig, Creapic, Error};

fn world() -> (Creapic<MemoryStore>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_800_000_000_000)));
    let core = Creapic::builder(Arc::new(MemoryStore::new()))
        .clock(clock.clone())
        .config(CoreConfig::default())
        .build();
    (core, clock)
}

fn pw(text: &str) -> Password {
    Password::presented(text).expect("bounded")
}

#[tokio::test]
async fn a_person_signs_in_uses_the_session_and_signs_out() {
    let (core, clock) = world();
    let set = Password::new("a long enough secret").unwrap();
    let user = core.set_password("ada@example.com", &set).await.unwrap();
    let (token, session) = core
        .sign_in("ada@example.com", &pw("a long enough secret"))
        .await
        .unwrap();
    assert_eq!(session.user, user.id);
    // Only the digest is stored: the token's text is nowhere in the store's answer.
    let stored = core
        .store()
        .session(&token.digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.digest, token.digest());

    clock.advance(Duration::from_secs(5 * 60));
    let again = SessionToken::parse(token.expose()).unwrap();
    let live = core.session(&again).await.unwrap().expect("live");
    assert_eq!(
        live.last_seen_at,
        clock_now(&clock),
        "used: last seen moves"
    );

    core.sign_out(&again).await.unwrap();
    assert!(core.session(&again).await.unwrap().is_none(), "signed out");
}

fn clock_now(clock: &ManualClock) -> Timestamp {
    use creapic_core::clock::Clock;
    clock.now()
}

#[tokio::test]
async fn wrong_password_and_unknown_email_fail_alike() {
    let (core, _) = world();
    let set = Password::new("a long enough secret").unwrap();
    core.set_password("ada@example.com", &set).await.unwrap();
    for (email, password) in [
        ("ada@example.com", "a long enough secreT"),
        ("nobody@example.com", "a long enough secret"),
        ("not an e-mail", "a long enough secret"),
        ("ada@example.com", ""),
    ] {
        let e = core.sign_in(email, &pw(password)).await.unwrap_err();
        assert!(matches!(e, Error::InvalidCredentials), "{email}: {e:?}");
        assert_eq!(e.code(), "invalid_credentials");
    }
}

#[tokio::test]
async fn sessions_end_when_idle_or_too_old_and_a_new_password_ends_them_all() {
    let (core, clock) = world();
    let policy = core.config().sessions;
    let set = Password::new("a long enough secret").unwrap();
    core.set_password("ada@example.com", &set).await.unwrap();
    let (idle, _) = core
        .sign_in("ada@example.com", &pw("a long enough secret"))
        .await
        .unwrap();
    clock.advance(policy.idle);
    assert!(
        core.session(&idle).await.unwrap().is_none(),
        "idle too long"
    );

    let (busy, _) = core
        .sign_in("ada@example.com", &pw("a long enough secret"))
        .await
        .unwrap();
    let mut waited = Duration::ZERO;
    while waited + policy.idle / 2 < policy.absolute {
        clock.advance(policy.idle / 2);
        waited += policy.idle / 2;
        assert!(
            core.session(&busy).await.unwrap().is_some(),
            "in use after {waited:?}"
        );
    }
    clock.advance(policy.idle / 2);
    assert!(
        core.session(&busy).await.unwrap().is_none(),
        "past its absolute lifetime"
    );
    assert!(
        core.purge_sessions().await.unwrap() >= 2,
        "both ended sessions are purged"
    );

    let (kept, _) = core
        .sign_in("ada@example.com", &pw("a long enough secret"))
        .await
        .unwrap();
    let new = Password::new("another long secret").unwrap();
    core.set_password("ada@example.com", &new).await.unwrap();
    assert!(
        core.session(&kept).await.unwrap().is_none(),
        "a new password signs out"
    );
    assert!(
        core.sign_in("ada@example.com", &pw("a long enough secret"))
            .await
            .is_err()
    );
    core.sign_in("ada@example.com", &pw("another long secret"))
        .await
        .unwrap();
}

#[test]
fn tokens_never_print() {
    let t = SessionToken::generate(&OsRandom);
    assert_eq!(format!("{t:?}"), "SessionToken(..)");
}
