//! A connection's budgets over time: the command budget every command draws on
//! by its cost, the tighter publish budget, and the window of client-fault
//! errors.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use wsgate_config::Namespaces;

use crate::protocol::Command;

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
        self.take(1)
    }

    /// Takes `cost` tokens; `false`, taking none, when fewer are left. A cost
    /// above the burst costs the whole burst, so that a small configured burst
    /// slows the heaviest commands down rather than refusing them for ever.
    pub fn take(&mut self, cost: u32) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        let cost = f64::from(cost).min(self.burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// The cost of a command in tokens of the command budget
/// (`limits.command_rate`, `limits.command_burst`): what it makes the cluster
/// do, relative to a `ping`. docs/protocol.md lists these weights; change both
/// together.
///
/// - `ping`, `leave`, `publish` and a `join` that reads no history: 1. A
///   `publish` also takes a token of the tighter publish budget.
/// - a `join` with `since` in a room with history: 2, as it reads up to the
///   namespace's `recovery_max` messages from storage. A client that
///   reconnects with its token in the handshake and rejoins its rooms at once
///   (at most `limits.max_rooms_per_connection`, 100 by default) still fits
///   the default burst of 200.
/// - `send` and `presence`: 5, as every node receives and answers them.
/// - `auth` and `refresh`: 10, as each verifies a signature (an RSA
///   verification costs more than everything else a command does).
pub fn cost(command: &Command<'_>, namespaces: &Namespaces) -> u32 {
    match command {
        Command::Ping | Command::Leave { .. } | Command::Publish { .. } => 1,
        Command::Join { room, since } => {
            if since.is_some() && namespaces.for_room(room).history_size > 0 {
                2
            } else {
                1
            }
        }
        Command::Send { .. } | Command::Presence { .. } => 5,
        Command::Auth { .. } | Command::Refresh { .. } => 10,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol;

    /// The cost of the command a client frame holds.
    fn command(text: &str) -> u32 {
        let namespaces = namespaces();
        let parsed = protocol::parse(text);
        let command = parsed.command.ok().unwrap();
        cost(&command, &namespaces)
    }

    /// `chat` keeps history; `default` does not.
    fn namespaces() -> Namespaces {
        let mut namespaces = Namespaces::default();
        let mut chat = namespaces.default.clone();
        chat.history_size = 10;
        namespaces.named.insert("chat".to_owned(), chat);
        namespaces
    }

    /// The weights docs/protocol.md lists: scatter-gather and storage reads
    /// cost more than a ping, signature checks the most.
    #[test]
    fn commands_cost_what_they_make_the_cluster_do() {
        let since = r#""since":{"epoch":"e","seq":3}"#;
        assert_eq!(command(r#"{"op":"ping","id":1}"#), 1);
        assert_eq!(command(r#"{"op":"leave","room":"chat:a"}"#), 1);
        assert_eq!(command(r#"{"op":"publish","room":"chat:a","data":1}"#), 1);
        assert_eq!(command(r#"{"op":"join","id":1,"room":"chat:a"}"#), 1);
        assert_eq!(
            command(&format!(
                r#"{{"op":"join","id":1,"room":"chat:a",{since}}}"#
            )),
            2
        );
        // A room without history ignores `since`: nothing is read.
        assert_eq!(
            command(&format!(r#"{{"op":"join","id":1,"room":"lobby",{since}}}"#)),
            1
        );
        assert_eq!(command(r#"{"op":"send","id":1,"user":"u","data":1}"#), 5);
        assert_eq!(command(r#"{"op":"presence","id":1,"room":"chat:a"}"#), 5);
        assert_eq!(command(r#"{"op":"auth","id":1,"token":"t"}"#), 10);
        assert_eq!(command(r#"{"op":"refresh","id":1,"token":"t"}"#), 10);
    }

    /// At the defaults, a client that rejoins with `since` the most rooms a
    /// connection may hold, as it does after a reconnect, fits the burst.
    #[test]
    fn rejoining_every_room_with_since_fits_the_default_burst() {
        let limits = wsgate_config::Limits::default();
        let since = r#""since":{"epoch":"e","seq":3}"#;
        let rejoin = command(&format!(
            r#"{{"op":"join","id":1,"room":"chat:a",{since}}}"#
        ));
        let total = u64::from(rejoin) * limits.max_rooms_per_connection as u64;
        assert!(total <= u64::from(limits.command_burst), "{total}");
    }

    /// A bucket spends its burst by cost, refuses a command it cannot pay for
    /// in full without taking anything, and still takes a cheaper one.
    #[test]
    fn the_bucket_spends_its_burst_by_cost() {
        // A rate so low that the test never sees a refill.
        let mut bucket = RateLimit::new(1e-9, 12);
        assert!(bucket.take(10));
        assert!(!bucket.take(5), "2 tokens left cannot pay 5");
        assert!(bucket.take(1));
        assert!(bucket.take(1));
        assert!(!bucket.allow());
    }

    /// A cost above the burst costs the whole burst: the heaviest command is
    /// slowed down by a small burst, never refused for ever.
    #[test]
    fn a_cost_above_the_burst_costs_the_burst() {
        let mut bucket = RateLimit::new(1e-9, 3);
        assert!(bucket.take(10));
        assert!(!bucket.allow());
    }

    /// The bucket refills at its rate, up to its burst.
    #[test]
    fn the_bucket_refills_at_its_rate() {
        let mut bucket = RateLimit::new(1000.0, 5);
        assert!(bucket.take(5));
        std::thread::sleep(Duration::from_millis(20));
        assert!(bucket.take(5), "20 ms at 1000/s refill the burst");
    }
}
