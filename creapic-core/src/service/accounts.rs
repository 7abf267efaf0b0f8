//! Console sign-in: setting a person's password, signing in and out, and resolving a session.
//!
//! Argon2 makes each hash and each verification cost tens of milliseconds of CPU: that is the
//! point (it bounds password guessing), and it is why hosts bound how many sign-ins run at once
//! and how many may fail per account and per address. Signing in with an unknown e-mail
//! verifies against a decoy hash, so it costs the same as a wrong password.

use crate::account::{DECOY_HASH, Password, PasswordHash, Session, SessionToken};
use crate::error::{Error, Result};
use crate::org::{Email, User};
use crate::service::Creapic;
use crate::store::Store;

impl<S: Store + ?Sized> Creapic<S> {
    /// Creates the person if needed and sets their password; every session they had ends.
    pub async fn set_password(&self, email: &str, password: &Password) -> Result<User> {
        let user = self.ensure_user(email).await?;
        let hash = PasswordHash::of(password, self.rng.as_ref())?;
        self.store.set_password(user.id, &hash, self.now()).await?;
        Ok(user)
    }

    /// Signs a person in: a new session, and its token — the only time it exists outside the
    /// browser's cookie. `InvalidCredentials` for an unknown e-mail or a wrong password, after
    /// the same work either way.
    pub async fn sign_in(
        &self,
        email: &str,
        password: &Password,
    ) -> Result<(SessionToken, Session)> {
        let found = match Email::new(email) {
            Ok(email) => self.store.credentials(&email).await?,
            Err(_) => None,
        };
        let decoy = PasswordHash::from_phc(DECOY_HASH)?;
        let (user, hash) = match &found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, &decoy),
        };
        let matches = hash.verify(password);
        let Some(user) = user.filter(|_| matches) else {
            return Err(Error::InvalidCredentials);
        };
        let now = self.now();
        let policy = &self.config.sessions;
        let token = SessionToken::generate(self.rng.as_ref());
        let session = Session {
            digest: token.digest(),
            user: user.id,
            created_at: now,
            last_seen_at: now,
            expires_at: now.plus(policy.absolute),
        };
        self.store
            .insert_session(&session, policy.per_user_max)
            .await?;
        Ok((token, session))
    }

    /// The live session `token` names, or `None` (unknown, signed out, idle too long or past
    /// its lifetime). Marks it used, at most once per [`SessionPolicy::touch_every`].
    ///
    /// [`SessionPolicy::touch_every`]: crate::account::SessionPolicy::touch_every
    pub async fn session(&self, token: &SessionToken) -> Result<Option<Session>> {
        let digest = token.digest();
        let Some(mut session) = self.store.session(&digest).await? else {
            return Ok(None);
        };
        let now = self.now();
        let policy = &self.config.sessions;
        if !session.is_live(now, policy) {
            return Ok(None);
        }
        if now.since(session.last_seen_at) >= policy.touch_every {
            self.store.touch_session(&digest, now).await?;
            session.last_seen_at = now;
        }
        Ok(Some(session))
    }

    /// Ends the session `token` names (nothing if there is none).
    pub async fn sign_out(&self, token: &SessionToken) -> Result<()> {
        self.store.delete_session(&token.digest()).await?;
        Ok(())
    }

    /// Deletes sessions that ended (past their lifetime, or idle too long); how many. Run by
    /// the server kit's upkeep.
    pub async fn purge_sessions(&self) -> Result<u64> {
        let now = self.now();
        let idle_cutoff = now.minus(self.config.sessions.idle);
        self.store.purge_sessions(now, idle_cutoff).await
    }
}
