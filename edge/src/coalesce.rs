//! When a proxy group's new snapshot goes out to its streams: at once when the group has been
//! quiet (the leading edge: a lone change pays no wait), else after a window that starts at the
//! base debounce and doubles with each change that follows closely, up to a cap, and falls back to
//! nothing once changes stop for `quiet` (Istio's debounce, made adaptive). Under a steady stream
//! of changes the group publishes less often with more in each snapshot, so its streams push less
//! often with more in each push — and, being in step, share one response per publication
//! (`step`); when idle a change goes out at once.
//!
//! The backlog widens it too. The streams that had settled on the generation before the last one
//! published (sent all of it and had every push answered) are the ones keeping up; while fewer
//! than 9 in 10 of that many have settled on the last one, a change is held — one base window at
//! a time, at most 50 of them (1 s at 20 ms). So an edge that cannot push a generation to every
//! stream before the next arrives does not leave its streams generations behind, each planning
//! its own catch-up, but publishes at the pace its streams keep. A stream that stops answering
//! (a stuck or dead client) holds at most one generation, for at most the cap: it has not
//! settled, so it is not counted among those keeping up for the next.
//!
//! Pure: instants in, durations out. One per group, kept by the cache ([`crate::cache::Cache`]),
//! which holds the pending snapshot and publishes it when the window closes. Does not own the
//! streams (`xds::server`) or what a push holds (`xds::delta`, `xds::sotw`).

use std::time::{Duration, Instant};

/// The widest window, as a multiple of the base: 20 ms → 500 ms, so a change under sustained
/// load still reaches the proxy well within a second.
const MAX_FACTOR: u32 = 25;
/// Quiet for this many base windows (100 ms at 20 ms): the next change goes out at once.
const QUIET_FACTOR: u32 = 5;
/// The longest a backlog holds a change, as a multiple of the base: 20 ms → 1 s.
const MAX_HOLD_FACTOR: u32 = 50;

/// The group's streams are behind: `settled` of them have settled on the generation last
/// published, fewer than 9 in 10 of the `keeping_up` that had settled on the one before.
pub fn backlogged(settled: usize, keeping_up: usize) -> bool {
    settled.saturating_mul(10) < keeping_up.saturating_mul(9)
}

/// The first window of a burst when nothing else is configured: 20 ms (500 ms at most).
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// One group's coalescing state.
#[derive(Debug, Clone)]
pub struct Coalescer {
    base: Duration,
    max: Duration,
    quiet: Duration,
    max_hold: Duration,
    last_change: Option<Instant>,
    window: Duration,
}

impl Coalescer {
    /// Windows from `base` (the configured debounce; zero turns coalescing off).
    pub fn new(base: Duration) -> Self {
        Coalescer {
            base,
            max: base * MAX_FACTOR,
            quiet: base * QUIET_FACTOR,
            max_hold: base * MAX_HOLD_FACTOR,
            last_change: None,
            window: Duration::ZERO,
        }
    }

    /// A change arrived at `now`: how long to wait for more before pushing it.
    pub fn on_change(&mut self, now: Instant) -> Duration {
        let quiet = self.last_change.is_none_or(|t| now.saturating_duration_since(t) >= self.quiet);
        self.last_change = Some(now);
        self.window = if quiet || self.base.is_zero() {
            Duration::ZERO
        } else if self.window.is_zero() {
            self.base
        } else {
            (self.window * 2).min(self.max)
        };
        self.window
    }

    /// A change held for `held` reached the end of its window: how much longer to hold it while
    /// the group is `backlogged` (one base window, never past the cap), or `None`: publish now.
    pub fn hold_more(&self, held: Duration, backlogged: bool) -> Option<Duration> {
        (backlogged && held < self.max_hold).then(|| self.base.min(self.max_hold - held))
    }

    /// The push went out at `now` after the wait: the next change is measured from here.
    pub fn pushed(&mut self, now: Instant) {
        self.last_change = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(20);

    #[test]
    fn a_change_after_quiet_goes_out_at_once() {
        let mut c = Coalescer::new(BASE);
        let t0 = Instant::now();
        assert_eq!(c.on_change(t0), Duration::ZERO, "the first change");
        assert_eq!(c.on_change(t0 + Duration::from_secs(1)), Duration::ZERO, "a second later");
    }

    #[test]
    fn windows_widen_while_changes_keep_coming_and_reset_when_they_stop() {
        let mut c = Coalescer::new(BASE);
        let mut t = Instant::now();
        assert_eq!(c.on_change(t), Duration::ZERO);
        let mut windows = Vec::new();
        for _ in 0..8 {
            t += Duration::from_millis(10);
            let w = c.on_change(t);
            windows.push(w.as_millis());
            t += w;
            c.pushed(t);
        }
        assert_eq!(windows, [20, 40, 80, 160, 320, 500, 500, 500]);
        t += Duration::from_millis(150);
        assert_eq!(c.on_change(t), Duration::ZERO, "quiet for 100 ms: the leading edge again");
        t += Duration::from_millis(10);
        assert_eq!(c.on_change(t), BASE, "a new burst starts at the base window");
    }

    #[test]
    fn a_backlog_holds_a_change_one_base_window_at_a_time_up_to_the_cap() {
        let c = Coalescer::new(BASE);
        assert_eq!(c.hold_more(BASE, true), Some(BASE));
        assert_eq!(c.hold_more(BASE, false), None, "no backlog: published when the window ends");
        assert_eq!(c.hold_more(Duration::from_millis(990), true), Some(Duration::from_millis(10)));
        assert_eq!(
            c.hold_more(Duration::from_secs(1), true),
            None,
            "held 1 s: published whatever the backlog"
        );
        assert!(backlogged(8, 10) && !backlogged(9, 10) && !backlogged(0, 0));
    }

    #[test]
    fn a_zero_base_never_waits() {
        let mut c = Coalescer::new(Duration::ZERO);
        let t = Instant::now();
        assert_eq!(c.on_change(t), Duration::ZERO);
        assert_eq!(c.on_change(t), Duration::ZERO);
    }
}
