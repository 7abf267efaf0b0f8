//! Runnable examples of creapic (see the `[[example]]` entries of this package's Cargo.toml).
