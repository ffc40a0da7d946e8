//! Flotilla's own binaries (`flotilla-brain`, `flotilla-edge`) and other servers run as child
//! processes, with their output kept in a file the test can read, killed on `Drop`.
//!
//! The binaries are the ones cargo built beside this test (`target/<profile>/`): running the
//! workspace's tests (`cargo nextest run --workspace`, scripts/test.sh) builds them; a test run
//! of this package alone may not, and then the test fails naming the binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Path of a binary of this workspace, built into the same target directory as this test.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built; run the workspace's tests (cargo nextest run --workspace) or cargo build -p {name}",
        bin.display()
    );
    bin
}

/// Runs the `flotilla` CLI against `server` (off the runtime's threads); returns exit code,
/// stdout and stderr.
pub async fn flotilla_cli(server: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(workspace_bin("flotilla"));
    cmd.arg("--server").arg(server).args(args);
    let o = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("the CLI's thread")
        .expect("the flotilla CLI runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (o.status.code().unwrap_or(-1), text(&o.stdout), text(&o.stderr))
}

/// Arguments of a `flotilla-brain` that publishes to the NATS at `nats_url` and runs no edge of
/// its own, with REST on 127.0.0.1:`rest` and its xDS and gRPC API ports free; the caller adds
/// its store (`--data-dir` or `--database-url`) and anything else.
pub fn distributed_brain_args(nats_url: &str, rest: u16) -> Vec<String> {
    vec![
        "--nats-url".into(),
        nats_url.into(),
        "--no-embedded-edge".into(),
        "--rest-addr".into(),
        format!("127.0.0.1:{rest}"),
        "--xds-addr".into(),
        format!("127.0.0.1:{}", crate::free_port()),
        "--grpc-api-addr".into(),
        format!("127.0.0.1:{}", crate::free_port()),
    ]
}

/// A child process whose stdout and stderr go to one log file.
pub struct Process {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    pub fn start(program: &Path, args: &[String]) -> Process {
        Process::start_with_env(program, args, &[])
    }

    /// [`Process::start`] with extra environment variables.
    pub fn start_with_env(program: &Path, args: &[String], env: &[(&str, &str)]) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("output.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Process { child, log, _dir: dir }
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`STOP`, `CONT`, `KILL`, …) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {} failed", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit; its exit status, or None if it is still
    /// running.
    pub async fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// True once the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
