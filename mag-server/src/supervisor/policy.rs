//! When to start mcp-client again after it exited: the backoff that doubles per exit, and
//! the crash-loop guard.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::settings::Supervision;

/// When to start an mcp-client again: backoff doubling per exit, and the crash-loop guard.
pub(super) struct RestartPolicy {
    cfg: Supervision,
    exits: VecDeque<Instant>,
    backoff: Duration,
}

impl RestartPolicy {
    pub(super) fn new(cfg: Supervision) -> Self {
        Self {
            backoff: cfg.restart_backoff,
            cfg,
            exits: VecDeque::new(),
        }
    }

    /// Back to the first backoff and no exits counted.
    pub(super) fn reset(&mut self) {
        self.exits.clear();
        self.backoff = self.cfg.restart_backoff;
    }

    /// Records an exit at `now` of a run that lasted `ran`: how long to wait before starting
    /// again, or `Err(exits)` when that many exits within the window make a crash loop.
    /// A run longer than the window starts the backoff over.
    pub(super) fn on_exit(&mut self, now: Instant, ran: Duration) -> Result<Duration, usize> {
        self.exits.push_back(now);
        let window = self.cfg.crash_loop_window;
        while self
            .exits
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.exits.pop_front();
        }
        if ran > window {
            self.backoff = self.cfg.restart_backoff;
        }
        if self.exits.len() >= self.cfg.crash_loop_exits as usize {
            return Err(self.exits.len());
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.cfg.restart_backoff_max);
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_fast_exits_make_a_crash_loop() {
        let mut policy = RestartPolicy::new(Supervision::default());
        let start = Instant::now();
        let quick = Duration::from_millis(10);
        let waits: Vec<_> = (0..4)
            .map(|i| policy.on_exit(start + Duration::from_secs(i), quick))
            .collect();
        let secs = |s| Ok(Duration::from_secs(s));
        assert_eq!(waits, [secs(1), secs(2), secs(4), secs(8)]);
        assert_eq!(
            policy.on_exit(start + Duration::from_secs(5), quick),
            Err(5)
        );

        // Exits spread wider than the window never trip it; the wait stops at the cap.
        let mut policy = RestartPolicy::new(Supervision::default());
        let mut last = Ok(Duration::ZERO);
        for i in 0..20 {
            last = policy.on_exit(start + Duration::from_secs(i * 20), quick);
        }
        assert_eq!(last, secs(30));

        // A long healthy run starts the backoff over.
        assert_eq!(
            policy.on_exit(start + Duration::from_secs(1000), Duration::from_secs(600)),
            secs(1)
        );
    }
}
