//! Samples (four a second): the fleet's counters and, from /proc, the CPU seconds and RSS of the
//! processes under test (`--pid brain=123 --pid edge=456`). Prints the progress line and keeps
//! the series for the report and the plots.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fleet::Counters;
use crate::track::Tracker;

/// A process to watch: a name for the report and its pid.
#[derive(Debug, Clone, Serialize)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = String;

    fn from_str(s: &str) -> Result<Watched, String> {
        let (name, pid) = s.split_once('=').unwrap_or(("process", s));
        let pid: u32 = pid.parse().map_err(|e| format!("--pid {s:?}: expected NAME=PID or PID: {e}"))?;
        if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
            return Err(format!("--pid {s:?}: no process {pid} (/proc/{pid}/stat is missing)"));
        }
        Ok(Watched { name: name.to_string(), pid })
    }
}

/// (utime + stime in seconds, RSS in bytes) of a process, from /proc/<pid>/stat.
pub fn proc_stat(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some((ticks / 100.0, rss_pages * 4096))
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcSample {
    pub name: String,
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub t: f64,
    pub phase: String,
    pub connected: usize,
    pub synced: usize,
    pub changes: u32,
    pub pushes: u64,
    pub bytes: u64,
    pub p99_ms: f64,
    pub procs: Vec<ProcSample>,
}

pub struct Sampler {
    pub series: Arc<Mutex<Vec<Sample>>>,
    pub phase: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(watched: Vec<Watched>, counters: Arc<Counters>, tracker: Arc<Tracker>) -> Sampler {
        let series = Arc::new(Mutex::new(Vec::new()));
        let phase = Arc::new(Mutex::new("ramp".to_string()));
        let (s, p) = (series.clone(), phase.clone());
        let task = tokio::spawn(async move {
            let start = Instant::now();
            // Four samples a second (the RSS plot needs points during a fast ramp); the progress
            // line once a second.
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last_pushes = 0;
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n += 1;
                let sample = Sample {
                    t: start.elapsed().as_secs_f64(),
                    phase: p.lock().map(|p| p.clone()).unwrap_or_default(),
                    connected: counters.connected.load(Ordering::Relaxed),
                    synced: counters.synced.load(Ordering::Relaxed),
                    changes: tracker.next_id().saturating_sub(1),
                    pushes: counters.pushes.load(Ordering::Relaxed),
                    bytes: counters.bytes.load(Ordering::Relaxed),
                    p99_ms: tracker.p99_ms(),
                    procs: watched
                        .iter()
                        .filter_map(|w| {
                            proc_stat(w.pid).map(|(cpu, rss)| ProcSample {
                                name: w.name.clone(),
                                cpu_seconds: cpu,
                                rss_bytes: rss,
                            })
                        })
                        .collect(),
                };
                if n % 4 != 1 {
                    if let Ok(mut s) = s.lock() {
                        s.push(sample);
                    }
                    continue;
                }
                let rss: Vec<String> =
                    sample.procs.iter().map(|p| format!("{} {} MB", p.name, p.rss_bytes >> 20)).collect();
                eprintln!(
                    "[{:>5.0}s {}] connected {} synced {} | changes {} | p99 {:.0} ms | {} pushes/s | {}",
                    sample.t,
                    sample.phase,
                    sample.connected,
                    sample.synced,
                    sample.changes,
                    sample.p99_ms,
                    sample.pushes - last_pushes,
                    rss.join(", ")
                );
                last_pushes = sample.pushes;
                if let Ok(mut s) = s.lock() {
                    s.push(sample);
                }
            }
        });
        Sampler { series, phase, task }
    }

    pub fn set_phase(&self, name: &str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = name.to_string();
        }
    }

    pub fn stop(self) -> Vec<Sample> {
        self.task.abort();
        self.series.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
