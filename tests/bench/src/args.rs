//! The command line: one subcommand per scenario, sharing the flags that say where the load goes
//! and how it is generated.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

/// Load generator and reporter for wsgate.
///
/// Starts the servers of a scenario itself (nats-server from PATH, N gateways on free loopback
/// ports) or targets given URLs, opens many WebSocket connections from a few tasks in a few
/// worker processes, and reports connections, connect rate, resident memory per connection,
/// deliveries per second, end-to-end latency percentiles, errors and CPU time per server
/// process. `--compare nats` runs the same load against nats-server's own WebSocket listener
/// in the same run and prints wsgate's ratio to it.
#[derive(Parser, Debug)]
#[command(name = "wsgate-bench", version, about, long_about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Memory: open connections, join a room each, hold them, and report the servers'
    /// resident memory per connection.
    Idle(IdleArgs),
    /// Connect rate: open connections as fast as the servers accept them.
    Storm(StormArgs),
    /// Fan-out: R rooms × M members spread over the gateways, P publishers at a fixed rate, or
    /// ramping the rate up to the highest one sustained with p99 under a bound and every message
    /// delivered.
    Fanout(FanoutArgs),
    /// User-to-user: senders `send` to users (one connection each) round robin.
    Direct(DirectArgs),
    /// Leaks: connect/join/leave/disconnect cycles for a while, comparing the servers' memory
    /// after with where it started.
    Churn(ChurnArgs),
    /// Scale-out: `--gateways` gateways on one nats-server hold `--connections`, then
    /// `--add-gateways` more start, and the run samples each gateway's connections while the
    /// fleet rebalances (clients follow `reconnect` to the next gateway, as through a
    /// round-robin ingress, and try the next one on a 503). Reports the connections per node
    /// over time, the connections moved against the fewest needed, and the convergence time.
    Scale(ScaleArgs),
    /// Draws the ramps of saved JSON reports (`--json` output) as one SVG: deliveries per
    /// second demanded against p50 and p99 latency, one line per server.
    Plot(PlotArgs),
    /// Internal: a worker process holding connections, driven over stdin/stdout by the
    /// coordinator.
    #[command(hide = true)]
    Worker,
}

/// What the load goes to and how it is generated; shared by every scenario.
#[derive(ClapArgs, Debug, Clone)]
pub struct Common {
    /// WebSocket URL of a running gateway (e.g. `ws://127.0.0.1:8080/ws`); repeat to spread
    /// connections over several. Without it the tool starts its own gateways.
    #[arg(long, env = "WSGATE_BENCH_TARGET")]
    pub target: Vec<String>,

    /// Gateways to start (ignored with `--target`). More than one, or `--nats`, starts a
    /// nats-server for them to share. Socket.IO runs as many nodes on one redis-server, Sockudo
    /// as many nodes on one nats-server.
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,

    /// Start a nats-server and run the gateways on it even when there is only one.
    #[arg(long)]
    pub nats: bool,

    /// Rooms keep this many messages of history (the gateways' default namespace gets
    /// `history_size`; with NATS, JetStream with file storage): measures the history path
    /// (store, acknowledge, republish with seq/prev) against the plain one.
    #[arg(long, value_name = "MESSAGES")]
    pub history: Option<u64>,

    /// With `--history`: messages expire after this many seconds
    /// (`history_ttl_seconds` of the default namespace). Default: no expiry.
    #[arg(long, value_name = "SECONDS")]
    pub history_ttl_seconds: Option<u64>,

    /// Before the load, publish one message to each of this many other rooms (through one
    /// connection to the first gateway), so the history holds that many rooms while the
    /// scenario measures: a publish must cost the same with 1,000 rooms as with 100,000.
    #[arg(long, value_name = "ROOMS", default_value_t = 0)]
    pub prefill_rooms: u64,

    /// The gateway binary to start. Default: `wsgate` beside this binary, else
    /// `target/release/wsgate`.
    #[arg(long, env = "WSGATE_BENCH_WSGATE_BIN")]
    pub wsgate_bin: Option<PathBuf>,

    /// The nats-server binary (looked up in PATH).
    #[arg(
        long,
        default_value = "nats-server",
        env = "WSGATE_BENCH_NATS_SERVER_BIN"
    )]
    pub nats_server_bin: PathBuf,

    /// Node.js, for `--compare socketio`.
    #[arg(long, default_value = "node", env = "WSGATE_BENCH_NODE_BIN")]
    pub node_bin: PathBuf,

    /// redis-server, for `--compare socketio`.
    #[arg(
        long,
        default_value = "redis-server",
        env = "WSGATE_BENCH_REDIS_SERVER_BIN"
    )]
    pub redis_server_bin: PathBuf,

    /// The directory holding the Socket.IO peer's `server.js` and its `node_modules`
    /// (`tests/bench/install-peers socketio` fills it). Default: `tests/bench/socketio` of
    /// this source tree.
    #[arg(long, env = "WSGATE_BENCH_SOCKETIO_DIR")]
    pub socketio_dir: Option<PathBuf>,

    /// The Sockudo binary, for `--compare sockudo` (`tests/bench/install-peers sockudo` builds
    /// it). Default: `sockudo` in PATH, else in `$CARGO_HOME/bin` (`~/.cargo/bin`).
    #[arg(long, env = "WSGATE_BENCH_SOCKUDO_BIN")]
    pub sockudo_bin: Option<PathBuf>,

    /// A gateway configuration file to use instead of the generated one (which lifts the
    /// publish rate limit and allows 19,500 connections per gateway).
    #[arg(long)]
    pub gateway_config: Option<PathBuf>,

    /// `limits.send_queue` of the started gateways (frames queued per connection before it is
    /// closed with 1013). Default: the gateway's default.
    #[arg(long)]
    pub send_queue: Option<u64>,

    /// Threads of each started gateway and Sockudo node (`WSGATE_WORKER_THREADS`, and
    /// `TOKIO_WORKER_THREADS` for Sockudo and gateways older than `worker_threads`). Default:
    /// the machine's CPUs shared among the nodes, at least 1 each, as pods with CPU limits on
    /// one machine would get; 0: each node's own default, a thread per CPU. Several nodes with
    /// a thread per CPU each oversubscribe the cores they share with the load generator, and
    /// the kernel then gives the load generator a smaller share of the machine.
    #[arg(long, value_name = "N")]
    pub node_threads: Option<usize>,

    /// `RUST_LOG` of the started gateways (and Sockudo nodes); logging costs CPU, so it is quiet
    /// by default.
    #[arg(long, default_value = "warn")]
    pub gateway_log: String,

    /// Also run the same load against a peer in the same run and print wsgate's ratio to it.
    /// Repeatable. A peer whose parts are missing is skipped with a message.
    #[arg(long, value_enum)]
    pub compare: Vec<Peer>,

    /// Print the report as JSON on standard output instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also draw the run's publishing steps (`fanout` and `direct`) as an SVG plot in this file:
    /// deliveries per second demanded against p50 and p99, one line per server, on a log
    /// latency axis with the 50 ms and 500 ms bounds drawn.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Exit with status 3 when the figures are not sane (connections missing, nothing
    /// delivered, impossible latencies or memory); for smoke tests, not a timing threshold.
    #[arg(long)]
    pub check: bool,

    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,

    /// Worker processes holding the connections. Default: enough for `--per-worker` each.
    #[arg(long)]
    pub workers: Option<usize>,

    /// Most connections per worker process; the open-file limit (20,000 here) bounds it.
    #[arg(long, default_value_t = 12_000)]
    pub per_worker: u64,

    /// Tasks per worker process driving the connections (each task owns many).
    #[arg(long, default_value_t = 2)]
    pub tasks: usize,

    /// Loopback source addresses to spread client sockets over (127.0.0.1, 127.0.0.2, ...),
    /// so no single address runs out of ports. Only used for loopback targets.
    #[arg(long, default_value_t = 64)]
    pub source_ips: u32,

    /// Connection attempts in flight at once, over all workers. Much more than the server's
    /// accept backlog absorbs turns into SYN retransmits (a 1 s stall) rather than speed.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Time allowed for one connection's TCP connect, upgrade, welcome and join.
    #[arg(long, default_value_t = 15_000)]
    pub connect_timeout_ms: u64,

    /// HS256 secret for minting tokens (`direct` needs the `send` claim). Generated when the
    /// tool starts the gateways; required with `--target` for `direct`.
    #[arg(long, env = "WSGATE_BENCH_JWT_SECRET")]
    pub jwt_secret: Option<String>,
}

/// A server compared with wsgate in the same run.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// nats-server's own WebSocket listener, clients speaking the NATS protocol: the reference.
    Nats,
    /// Socket.IO with @socket.io/redis-adapter on redis-server.
    Socketio,
    /// Sockudo, a Pusher-protocol server, its nodes sharing a nats-server through its NATS
    /// adapter; members subscribe to public channels, publishers use the signed HTTP events API.
    Sockudo,
}

/// `idle`.
#[derive(ClapArgs, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Rooms the connections join, one each, spread evenly.
    #[arg(long, default_value_t = 100)]
    pub rooms: u64,
    /// Seconds to hold the connections before reading memory, so it settles.
    #[arg(long, default_value_t = 5)]
    pub hold_seconds: u64,
}

/// `storm`.
#[derive(ClapArgs, Debug, Clone)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open as fast as possible.
    #[arg(long, default_value_t = 10_000)]
    pub connections: u64,
}

/// Publishing: how fast, how long, and the ramp; shared by `fanout` and `direct`.
#[derive(ClapArgs, Debug, Clone)]
pub struct LoadArgs {
    /// Publisher (sender) connections, held by this process.
    #[arg(long, default_value_t = 2)]
    pub publishers: u64,
    /// Messages per second over all publishers (a fixed-rate run, or the first ramp step).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of publishing per run (per step when ramping).
    #[arg(long, default_value_t = 10)]
    pub duration_seconds: u64,
    /// Ramp the rate up from `--rate` by `--ramp-factor` until a step fails (p99 over
    /// `--p99-ms`, a message not delivered, an error, or the publishers falling behind), then
    /// refine between the last good and the failing rate. When the first step fails, the rate
    /// goes down by the same factor until one passes.
    #[arg(long)]
    pub ramp: bool,
    /// Ramp from `--rate` by `--ramp-factor` up to this rate (the last step runs at exactly
    /// this rate) and report every step, whether it passes or not: no stop at the first
    /// failing step and no refinement. Stops early only when members were closed, since later
    /// steps could not count deliveries. Implies `--ramp`.
    #[arg(long, value_name = "MSGS_PER_SECOND")]
    pub ramp_through: Option<f64>,
    /// Rate multiplier between ramp steps.
    #[arg(long, default_value_t = 1.5)]
    pub ramp_factor: f64,
    /// Most ramp steps before refining.
    #[arg(long, default_value_t = 16)]
    pub ramp_steps: u32,
    /// Bisection steps between the last good and the first failing rate.
    #[arg(long, default_value_t = 2)]
    pub refine_steps: u32,
    /// The p99 bound of a passing ramp step, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub p99_ms: f64,
    /// Milliseconds to wait after a step's last publish before counting deliveries.
    #[arg(long, default_value_t = 2000)]
    pub grace_ms: u64,
    /// Bytes of padding added to each message's data.
    #[arg(long, default_value_t = 0)]
    pub padding: usize,
}

/// `fanout`.
#[derive(ClapArgs, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: u64,
    /// Members per room, spread over the gateways.
    #[arg(long, default_value_t = 1000)]
    pub members: u64,
    /// The protocol wsgate is measured in: its own (`native`), or Pusher Channels (`pusher`):
    /// the gateways serve a generated `[pusher]` app, members subscribe to public channels at
    /// `/app/{key}?protocol=7`, and publishers trigger events through the signed HTTP API on
    /// the admin listener, as `--compare sockudo` does with Sockudo. Needs gateways started by
    /// the tool (no `--target` or `--gateway-config`).
    #[arg(long, value_enum, default_value_t = Proto::Native)]
    pub proto: Proto,
}

/// The protocol of wsgate's run of `fanout`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// wsgate's own protocol (docs/protocol.md) at `/ws`.
    Native,
    /// The Pusher Channels protocol (docs/pusher.md) at `/app/{key}`.
    Pusher,
}

/// `direct`.
#[derive(ClapArgs, Debug, Clone)]
pub struct DirectArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Receiving users, one connection each.
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
}

/// `churn`.
#[derive(ClapArgs, Debug, Clone)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds of churn.
    #[arg(long, default_value_t = 60)]
    pub duration_seconds: u64,
    /// Cycles in flight at once, over all workers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Rooms the cycles join, spread evenly.
    #[arg(long, default_value_t = 10)]
    pub rooms: u64,
    /// Seconds of churn before the starting memory is read (allocators and caches warm up).
    #[arg(long, default_value_t = 5)]
    pub warmup_seconds: u64,
    /// Seconds after the churn before the final memory is read.
    #[arg(long, default_value_t = 3)]
    pub settle_seconds: u64,
}

/// `plot`.
#[derive(ClapArgs, Debug, Clone)]
pub struct PlotArgs {
    /// JSON reports written by `--json` (`fanout` or `direct`); every run with steps in them is
    /// drawn, labelled by its system (and by the file's name when several files are given).
    #[arg(required = true, value_name = "REPORT.json")]
    pub reports: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long, short, value_name = "FILE.svg")]
    pub out: PathBuf,
    /// The plot's title. Default: the scenario and the date of the files.
    #[arg(long)]
    pub title: Option<String>,
}

/// `scale`.
#[derive(ClapArgs, Debug, Clone)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections held throughout, spread over the first gateways.
    #[arg(long, default_value_t = 400)]
    pub connections: u64,
    /// Rooms the connections join, one each, spread evenly.
    #[arg(long, default_value_t = 10)]
    pub rooms: u64,
    /// Gateways started once the connections are held.
    #[arg(long, default_value_t = 2)]
    pub add_gateways: usize,
    /// Seconds of sampling before the gateways are added.
    #[arg(long, default_value_t = 3)]
    pub add_after_seconds: u64,
    /// Seconds of sampling after the gateways are added.
    #[arg(long, default_value_t = 45)]
    pub observe_seconds: u64,
    /// Milliseconds between samples of the gateways' connections.
    #[arg(long, default_value_t = 250)]
    pub sample_ms: u64,
    /// `rebalance.min_age_ms` of the generated gateway configuration: keep it below the time
    /// the connections are held before the gateways are added (or none may move at first) and
    /// above the time the fleet takes to converge (or a moved client could be moved again).
    #[arg(long, default_value_t = 2_000)]
    pub min_age_ms: u64,
    /// `rebalance.spread_ms` of the generated gateway configuration.
    #[arg(long, default_value_t = 2_000)]
    pub spread_ms: u64,
    /// A node counts as converged within this fraction of the mean.
    #[arg(long, default_value_t = 0.2)]
    pub band: f64,
}
