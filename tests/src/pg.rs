//! A PostgreSQL database of its own for one test, on the machine's server (127.0.0.1:5432, or
//! `FLOTILLA_TEST_DATABASE_URL` for the admin connection), dropped by [`TempDatabase::drop_now`].

use std::sync::atomic::{AtomicU32, Ordering};

pub struct TempDatabase {
    admin: String,
    name: String,
    pub url: String,
}

async fn run(admin: &str, sql: &str) {
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e} (scripts/test.sh starts it)"));
    sqlx::query(sql).execute(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

impl TempDatabase {
    pub async fn create(prefix: &str) -> TempDatabase {
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = std::env::var("FLOTILLA_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        run(&admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        run(&admin, &format!("CREATE DATABASE {name}")).await;
        let url = format!("{}/{name}", admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base));
        TempDatabase { admin, name, url }
    }

    pub async fn drop_now(self) {
        run(&self.admin, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await;
    }
}
