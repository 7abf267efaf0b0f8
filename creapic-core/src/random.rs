//! Randomness: the [`RandomSource`] trait that key generation and id generation draw from.
//!
//! Injectable so that tests and simulations are reproducible ([`SeededRandom`]) while production
//! uses a cryptographically secure generator ([`OsRandom`]). Secrets (API keys) are only ever
//! generated from a source the caller chose; core never reaches for a global RNG on its own.

use std::sync::Mutex;

use rand::{Rng, SeedableRng};

/// A source of random bytes.
pub trait RandomSource: Send + Sync + 'static {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// The operating system's CSPRNG, through rand's thread-local ChaCha generator that reseeds from
/// the OS. Suitable for API key secrets.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&self, buf: &mut [u8]) {
        rand::rng().fill_bytes(buf);
    }
}

/// A deterministic generator seeded from a number: for tests and simulations only. Never use it
/// to generate keys that protect anything.
#[derive(Debug)]
pub struct SeededRandom {
    rng: Mutex<rand::rngs::StdRng>,
}

impl SeededRandom {
    /// A generator whose output is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRandom {
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        }
    }
}

impl RandomSource for SeededRandom {
    fn fill(&self, buf: &mut [u8]) {
        // A poisoned lock only means another thread panicked mid-fill; the generator state is
        // still a valid generator state, so keep using it.
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        rng.fill_bytes(buf);
    }
}

impl<R: RandomSource + ?Sized> RandomSource for std::sync::Arc<R> {
    fn fill(&self, buf: &mut [u8]) {
        (**self).fill(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_source_is_reproducible_and_os_source_is_not_constant() {
        let (a, b) = (SeededRandom::new(7), SeededRandom::new(7));
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        let (mut p, mut q) = ([0u8; 32], [0u8; 32]);
        OsRandom.fill(&mut p);
        OsRandom.fill(&mut q);
        assert_ne!(p, q);
    }
}
