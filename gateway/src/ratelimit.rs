//! A connection's budgets over time: the publish token bucket, and the window
//! of client-fault errors.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// `rate` tokens per second, at most `burst` at once.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst);
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token; `false` when none is left.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Client-fault errors within the last 60 seconds.
pub struct ErrorBudget {
    max: usize,
    times: VecDeque<Instant>,
}

impl ErrorBudget {
    /// A budget of `max` errors within any 60 seconds.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            times: VecDeque::new(),
        }
    }

    /// Records an error; returns whether the budget is exceeded.
    pub fn exceeded(&mut self) -> bool {
        let now = Instant::now();
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len() > self.max
    }
}
