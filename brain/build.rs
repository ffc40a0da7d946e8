//! Rebuilds the brain when a PostgreSQL migration is added or changed: `sqlx::migrate!` embeds
//! `migrations/` at compile time, and a new file alone would not make cargo compile again.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
