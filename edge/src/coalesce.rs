//! When a proxy group's new snapshot goes out to its streams: at once when the group has been
//! quiet (the leading edge: a lone change pays no wait), else after a window that starts at the
//! base debounce and doubles with each change that follows closely, up to a cap, and falls back to
//! nothing once changes stop for `quiet` (Istio's debounce, made adaptive). Under a steady stream
//! of changes the group publishes less often with more in each snapshot, so its streams push less
//! often with more in each push — and, being in step, share one response per publication
//! (`step`); when idle a change goes out at once.
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

/// The first window of a burst when nothing else is configured: 20 ms (500 ms at most).
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// One group's coalescing state.
#[derive(Debug, Clone)]
pub struct Coalescer {
    base: Duration,
    max: Duration,
    quiet: Duration,
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
    fn a_zero_base_never_waits() {
        let mut c = Coalescer::new(Duration::ZERO);
        let t = Instant::now();
        assert_eq!(c.on_change(t), Duration::ZERO);
        assert_eq!(c.on_change(t), Duration::ZERO);
    }
}
