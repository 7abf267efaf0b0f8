//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the migration
//! directories at compile time, and cargo only watches them if told to.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
