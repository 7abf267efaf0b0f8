//! Conformance of console accounts: passwords, sessions by digest, the per-person cap, and the
//! purge of ended sessions.

use std::sync::Arc;
use std::time::Duration;

use crate::account::{DECOY_HASH, PasswordHash, Session, SessionDigest};
use crate::clock::Timestamp;
use crate::error::Error;
use crate::id::UserId;
use crate::random::RandomSource;
use crate::store::Store;
use crate::testing::Fixture;

use super::ok;

fn digest(f: &Fixture) -> SessionDigest {
    let mut bytes = [0u8; 32];
    f.rng.fill(&mut bytes);
    SessionDigest::from_bytes(bytes)
}

fn session_at(f: &Fixture, user: UserId, at: Timestamp) -> Session {
    Session {
        digest: digest(f),
        user,
        created_at: at,
        last_seen_at: at,
        expires_at: at.plus(Duration::from_secs(24 * 3600)),
    }
}

/// A stored hash is read back by e-mail only once set; sessions are found by digest, touched
/// forward only, deleted once; a new password ends every session of its person.
pub async fn accounts_passwords_and_sessions_round_trip(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let user = ok(f.user().await, "user");
    let hash = ok(PasswordHash::from_phc(DECOY_HASH), "hash");
    assert!(
        ok(f.store.credentials(&user.email).await, "credentials").is_none(),
        "no credentials before a password is set"
    );
    let stranger = f.new_user_id();
    assert!(
        matches!(
            f.store.set_password(stranger, &hash, f.now).await,
            Err(Error::NotFound { .. })
        ),
        "a password for an unknown user is NotFound"
    );
    ok(f.store.set_password(user.id, &hash, f.now).await, "set");
    let (found, stored) = ok(f.store.credentials(&user.email).await, "credentials")
        .expect("credentials after the password is set");
    assert_eq!(found.id, user.id);
    assert_eq!(stored.as_str(), hash.as_str(), "the PHC string round-trips");

    let s = session_at(&f, user.id, f.now);
    ok(f.store.insert_session(&s, 10).await, "insert");
    assert_eq!(
        ok(f.store.session(&s.digest).await, "read"),
        Some(s.clone())
    );
    assert_eq!(ok(f.store.session(&digest(&f)).await, "unknown"), None);

    let later = f.now.plus(Duration::from_secs(90));
    ok(f.store.touch_session(&s.digest, later).await, "touch");
    ok(f.store.touch_session(&s.digest, f.now).await, "touch back");
    let read = ok(f.store.session(&s.digest).await, "read").expect("still there");
    assert_eq!(read.last_seen_at, later, "last_seen_at only moves forward");

    assert!(ok(f.store.delete_session(&s.digest).await, "delete"));
    assert!(!ok(f.store.delete_session(&s.digest).await, "delete again"));
    assert_eq!(ok(f.store.session(&s.digest).await, "gone"), None);

    let a = session_at(&f, user.id, f.now);
    ok(f.store.insert_session(&a, 10).await, "insert");
    ok(f.store.set_password(user.id, &hash, later).await, "reset");
    assert_eq!(
        ok(f.store.session(&a.digest).await, "after reset"),
        None,
        "a new password signs everyone out"
    );
}

/// Signing in once more than the cap ends the person's oldest sessions, nobody else's.
pub async fn accounts_sessions_are_capped_per_user(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let user = ok(f.user().await, "user");
    let other = ok(f.user().await, "other");
    let theirs = session_at(&f, other.id, f.now);
    ok(f.store.insert_session(&theirs, 2).await, "other's session");
    let mine: Vec<Session> = (0..4)
        .map(|i| session_at(&f, user.id, f.now.plus(Duration::from_secs(i))))
        .collect();
    for s in &mine {
        ok(f.store.insert_session(s, 2).await, "insert");
    }
    for (i, s) in mine.iter().enumerate() {
        let kept = ok(f.store.session(&s.digest).await, "read").is_some();
        assert_eq!(kept, i >= 2, "session {i}: only the newest two are kept");
    }
    assert!(
        ok(f.store.session(&theirs.digest).await, "other").is_some(),
        "the cap counts one person's sessions only"
    );
}

/// The purge deletes sessions past their lifetime or idle since before the cutoff, and keeps
/// the others.
pub async fn accounts_ended_sessions_are_purged(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let user = ok(f.user().await, "user");
    // Far in the fixture's past, so that a purge here touches no other test's sessions.
    let t0 = f.now.minus(Duration::from_secs(400 * 24 * 3600));
    let day = Duration::from_secs(24 * 3600);
    let expired = Session {
        expires_at: t0.plus(Duration::from_secs(60)),
        ..session_at(&f, user.id, t0)
    };
    let idle = session_at(&f, user.id, t0);
    let live = Session {
        last_seen_at: t0.plus(day),
        expires_at: t0.plus(day * 2),
        ..session_at(&f, user.id, t0)
    };
    for s in [&expired, &idle, &live] {
        ok(f.store.insert_session(s, 10).await, "insert");
    }
    let now = t0.plus(Duration::from_secs(120));
    let idle_cutoff = t0.plus(Duration::from_secs(60));
    let purged = ok(f.store.purge_sessions(now, idle_cutoff).await, "purge");
    assert!(purged >= 2, "both ended sessions are purged (got {purged})");
    assert_eq!(ok(f.store.session(&expired.digest).await, "expired"), None);
    assert_eq!(ok(f.store.session(&idle.digest).await, "idle"), None);
    assert!(ok(f.store.session(&live.digest).await, "live").is_some());
}
