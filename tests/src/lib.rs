//! Workspace-level integration tests of creapic (see the `[[test]]` entries of this package).
