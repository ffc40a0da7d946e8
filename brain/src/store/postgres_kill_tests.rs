//! kill -9 of a real PostgreSQL under the store: a private cluster (initdb from Debian's
//! PostgreSQL, or `FLOTILLA_PG_BIN_DIR`) on a free port with its own data directory, since the
//! machine's shared server must stay up for every other test. Run as the `postgres` user when the
//! tests run as root (the server refuses root).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_test_support::free_port;

use super::*;

/// A private PostgreSQL cluster.
struct TestPostgres {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    user: Option<(u32, u32)>,
}

/// Where initdb and postgres are: `FLOTILLA_PG_BIN_DIR`, else the newest of Debian's.
fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("FLOTILLA_PG_BIN_DIR") {
        return PathBuf::from(d);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    found.pop().expect(
        "PostgreSQL's initdb under /usr/lib/postgresql (scripts/test.sh installs it) or FLOTILLA_PG_BIN_DIR",
    )
}

/// The postgres user's uid and gid when this process is root (the server refuses to run as root).
fn server_user() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line =
        passwd.lines().find(|l| l.starts_with("postgres:")).expect("a postgres user to run the server as");
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().expect("uid"), f[3].parse().expect("gid")))
}

impl TestPostgres {
    fn start() -> TestPostgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = server_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the data directory");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin_dir().join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        let out = as_user(&mut initdb, user).output().expect("run initdb");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let child = Self::spawn(dir.path(), port, user);
        TestPostgres { child, port, dir, user }
    }

    fn spawn(dir: &Path, port: u16, user: Option<(u32, u32)>) -> Child {
        let mut cmd = Command::new(bin_dir().join("postgres"));
        cmd.arg("-D").arg(dir.join("data")).args(["-p", &port.to_string(), "-k"]).arg(dir);
        cmd.args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "synchronous_commit=on"]);
        as_user(&mut cmd, user).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start postgres")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A store on it, once the server accepts connections (after start or crash recovery).
    async fn store(&mut self) -> PostgresStore {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match PostgresStore::connect(&self.url(), 4).await {
                Ok(s) => return s,
                Err(e) if Instant::now() > deadline => panic!("the private PostgreSQL never answered: {e}"),
                Err(_) => {
                    // A restart can find the old backends still attached to shared memory and
                    // exit; start it again until it stays up.
                    if matches!(self.child.try_wait(), Ok(Some(_))) {
                        self.child = Self::spawn(self.dir.path(), self.port, self.user);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// kill -9 of the postmaster, then the server again on the same data directory.
    fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), self.port, self.user);
    }
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kill -9 of PostgreSQL: every write it acknowledged is there after crash recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_loses_no_acknowledged_write_on_kill_9() {
    let mut pg = TestPostgres::start();
    let s = pg.store().await;
    let written = acknowledged_writes(&s).await;
    drop(s);
    pg.kill_and_restart();
    let s = pg.store().await;
    all_there(&s, written).await;
}
