//! Worker processes: this binary re-executed as `wsgate-bench worker`, each holding up to
//! `--per-worker` connections (the open-file limit is per process), driven by the coordinator
//! with JSON lines on stdin and answering with JSON lines on stdout.
//!
//! A worker reads its [`Job`], says [`Event::Started`], and waits for a [`Command`]:
//! - `Connect`: its tasks open and set up their share of the members (progress is reported
//!   while they do), then poll every member for deliveries until `Stop`; `Report` hands over a
//!   step's deliveries and latencies;
//! - `Churn`: its tasks run connect/join/leave/close cycles for a while.
//!
//! Stdin closing (the coordinator is gone) stops the worker.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use futures::stream::{self, FuturesUnordered, SelectAll};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::client::{self, ConnectError, Endpoint, Event as MemberEvent, Member, Mode, Protocol};
use crate::histogram::{self, Wire};

/// What one worker does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub protocol: Protocol,
    pub mode: Mode,
    /// WebSocket URLs; member `g` connects to `endpoints[g % len]`.
    pub endpoints: Vec<String>,
    /// The members this worker holds: global indices `start..end`.
    pub start: u64,
    pub end: u64,
    /// Member `g` is in room `g / members_per_room` (in `direct`, user `g`).
    pub members_per_room: u64,
    /// Whether members join their room (or subscribe to their user's subject).
    pub join: bool,
    /// Tasks sharing the members.
    pub tasks: usize,
    /// Connection attempts in flight in this worker.
    pub concurrency: usize,
    /// Loopback source addresses to spread over.
    pub source_ips: u32,
    pub connect_timeout_ms: u64,
    /// Secret for minting per-user tokens (wsgate `direct`).
    pub jwt_secret: Option<String>,
    /// A member closed with 1012 (after a `reconnect` event: drain or rebalance) opens again
    /// at the next endpoint, round robin, as through an ingress; a refused attempt (503)
    /// tries the next one.
    #[serde(default)]
    pub follow_reconnects: bool,
}

impl Job {
    /// The room (or user) member `g` belongs to.
    pub fn destination(&self, g: u64) -> String {
        match self.mode {
            Mode::Rooms => client::room_name(g / self.members_per_room.max(1)),
            Mode::Direct => client::user_name(g),
        }
    }
}

/// Coordinator to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open the members and hold them.
    Connect,
    /// Run churn cycles for this long (members `start..end` are the cycle indices used).
    Churn { duration_ms: u64 },
    /// Hand over step `step`'s deliveries; later deliveries of it count as late.
    Report { step: u32 },
    /// The endpoints are now these (gateways were added): members reopening go to them.
    Endpoints { urls: Vec<String> },
    /// Hand over the members' moves so far.
    Moves,
    /// Close everything and exit.
    Stop,
}

/// Worker to coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    Started,
    Progress {
        done: u64,
        failed: u64,
    },
    Connected(ConnectSummary),
    Report(StepSummary),
    Churned(ChurnSummary),
    Moved(MoveSummary),
    /// The worker failed; the coordinator stops the run.
    Fatal {
        message: String,
    },
    /// The worker's stdout closed (coordinator side only).
    Exited,
}

/// How the connect phase went in one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectSummary {
    pub connected: u64,
    pub failed: u64,
    pub refused: u64,
    pub timeouts: u64,
    pub seconds: f64,
    /// Time from starting a connection to its join reply.
    pub latency: Wire,
    /// A few failure messages.
    pub samples: Vec<String>,
}

/// One step's deliveries in one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepSummary {
    pub step: u32,
    pub received: u64,
    /// Deliveries of earlier steps that came after their report.
    pub late: u64,
    pub latency: Wire,
    /// Members closed by the server with 1013 (slow consumer), since the start.
    pub closed_1013: u64,
    /// Members closed otherwise, since the start.
    pub closed_other: u64,
    /// Error replies and protocol errors, since the start.
    pub errors: u64,
    pub samples: Vec<String>,
}

/// Churn in one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnSummary {
    pub cycles: u64,
    pub failed: u64,
    pub refused: u64,
    pub seconds: f64,
    /// Time of a whole cycle.
    pub latency: Wire,
    pub samples: Vec<String>,
}

/// Members that followed a `reconnect` to another gateway, in one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MoveSummary {
    /// Members that reopened after a 1012.
    pub moves: u64,
    /// Members that moved more than once.
    pub moved_twice: u64,
    /// Reopen attempts refused or failed (each tried the next endpoint).
    pub retries: u64,
    /// Members that could not reopen at all.
    pub lost: u64,
}

/// Attempts to reopen one member before giving it up.
const REOPEN_ATTEMPTS: u32 = 100;

/// State the tasks of a worker share.
struct Shared {
    job: Job,
    endpoints: RwLock<Vec<Endpoint>>,
    /// The next endpoint a reopening member tries.
    next_endpoint: AtomicU64,
    moves: AtomicU64,
    moved_twice: AtomicU64,
    retries: AtomicU64,
    lost: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    timeouts: AtomicU64,
    closed_1013: AtomicU64,
    closed_other: AtomicU64,
    errors: AtomicU64,
    late: AtomicU64,
    /// The step deliveries are counted for.
    step: AtomicU32,
    /// Per task: this step's deliveries (a lock per task, so tasks never contend).
    steps: Vec<Mutex<(Histogram<u64>, u64)>>,
    connect_latency: Mutex<Histogram<u64>>,
    /// When the connect phase started, and how long after it the last attempt finished: the
    /// phase's duration without the progress-reporting granularity.
    connect_started: Mutex<Option<Instant>>,
    last_done_ns: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Shared {
    fn sample(&self, message: String) {
        if let Ok(mut samples) = self.samples.lock()
            && samples.len() < 5
        {
            samples.push(message);
        }
    }

    fn samples(&self) -> Vec<String> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn source(&self, g: u64, endpoint: &Endpoint) -> Option<Ipv4Addr> {
        if !endpoint.is_loopback() || self.job.source_ips == 0 {
            return None;
        }
        let offset = (g % u64::from(self.job.source_ips)) as u32;
        Some(Ipv4Addr::from(0x7f00_0001u32 + offset))
    }

    fn connect_failed(&self, error: &ConnectError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        match error {
            ConnectError::Refused(_) => self.refused.fetch_add(1, Ordering::Relaxed),
            ConnectError::Timeout => self.timeouts.fetch_add(1, Ordering::Relaxed),
            ConnectError::Failed(_) => 0,
        };
        self.sample(error.to_string());
    }

    /// The endpoint `index` picks, round robin.
    fn endpoint(&self, index: u64) -> Result<Endpoint, ConnectError> {
        let endpoints = self
            .endpoints
            .read()
            .map_err(|_| ConnectError::Failed("endpoints poisoned".into()))?;
        let count = endpoints.len().max(1) as u64;
        endpoints
            .get((index % count) as usize)
            .cloned()
            .ok_or_else(|| ConnectError::Failed("no endpoints".into()))
    }

    /// Opens and sets up member `g` at its endpoint (`g` round robin).
    async fn open(&self, g: u64) -> Result<(client::Ws, client::NatsParser), ConnectError> {
        let endpoint = self.endpoint(g)?;
        self.open_at(g, &endpoint).await
    }

    /// Opens member `g` again after a 1012, at the next endpoint round robin, trying the next
    /// one on a refusal.
    async fn reopen(&self, g: u64) -> Result<(client::Ws, client::NatsParser), ConnectError> {
        let mut last = ConnectError::Failed("no attempt".into());
        for attempt in 0..REOPEN_ATTEMPTS {
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
                // Spread the retries, as clients back off.
                tokio::time::sleep(Duration::from_millis(
                    50 + (g * 7 + u64::from(attempt)) % 100,
                ))
                .await;
            }
            let index = self.next_endpoint.fetch_add(1, Ordering::Relaxed);
            let endpoint = self.endpoint(index)?;
            match self.open_at(g, &endpoint).await {
                Ok(opened) => return Ok(opened),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// Opens and sets up member `g` at `endpoint`.
    async fn open_at(
        &self,
        g: u64,
        endpoint: &Endpoint,
    ) -> Result<(client::Ws, client::NatsParser), ConnectError> {
        let destination = self.job.destination(g);
        let token = match (&self.job.jwt_secret, self.job.protocol, self.job.mode) {
            (Some(secret), Protocol::Wsgate, Mode::Direct) => Some(
                client::token(secret, &destination)
                    .map_err(|e| ConnectError::Failed(e.to_string()))?,
            ),
            _ => None,
        };
        let timeout = Duration::from_millis(self.job.connect_timeout_ms);
        let work = async {
            let mut ws = client::open(endpoint, self.source(g, endpoint), token.as_deref()).await?;
            let parser = client::setup(
                &mut ws,
                self.job.protocol,
                self.job.mode,
                &destination,
                self.job.join,
            )
            .await
            .map_err(|e| ConnectError::Failed(format!("{e:#}")))?;
            Ok((ws, parser))
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(ConnectError::Timeout))
    }

    fn on_event(&self, slot: usize, event: MemberEvent) {
        match event {
            MemberEvent::Delivery { sent_ns, step } => {
                let now = client::mono_ns();
                if step < self.step.load(Ordering::Relaxed) {
                    self.late.fetch_add(1, Ordering::Relaxed);
                } else if let Ok(mut current) = self.steps[slot].lock() {
                    histogram::record_ns(&mut current.0, now.saturating_sub(sent_ns));
                    current.1 += 1;
                }
            }
            MemberEvent::Closed(Some(1013)) => {
                self.closed_1013.fetch_add(1, Ordering::Relaxed);
            }
            MemberEvent::Closed(code) => {
                self.closed_other.fetch_add(1, Ordering::Relaxed);
                self.sample(format!("closed by the server: {code:?}"));
            }
            MemberEvent::Error(message) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.sample(message);
            }
        }
    }

    /// Takes step `step`'s figures and moves on to the next step.
    fn report(&self, step: u32) -> StepSummary {
        self.step.store(step + 1, Ordering::Relaxed);
        let mut merged = histogram::new();
        let mut received = 0;
        for slot in &self.steps {
            if let Ok(mut current) = slot.lock() {
                let _ = merged.add(&current.0);
                received += current.1;
                current.0.reset();
                current.1 = 0;
            }
        }
        StepSummary {
            step,
            received,
            late: self.late.load(Ordering::Relaxed),
            latency: Wire::from(&merged),
            closed_1013: self.closed_1013.load(Ordering::Relaxed),
            closed_other: self.closed_other.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            samples: self.samples(),
        }
    }
}

/// Member `g`'s events, tagged with `g` (one stream type for every member).
fn tagged(g: u64, member: Member) -> impl futures::Stream<Item = (u64, MemberEvent)> {
    member.map(move |event| (g, event))
}

/// One task's members: opened with bounded concurrency, then polled together until stopped.
/// With `follow_reconnects`, a member closed with 1012 opens again elsewhere.
async fn hold(
    shared: Arc<Shared>,
    slot: usize,
    indices: Vec<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let concurrency = (shared.job.concurrency / shared.job.tasks.max(1)).max(1);
    let opener = shared.clone();
    let mut connecting = stream::iter(indices)
        .map(move |g| {
            let shared = opener.clone();
            async move {
                let started = Instant::now();
                let result = shared.open(g).await;
                (g, started.elapsed(), result)
            }
        })
        .buffer_unordered(concurrency);
    let mut members = SelectAll::new();
    let mut reopening = FuturesUnordered::new();
    let mut moves: HashMap<u64, u32> = HashMap::new();
    let mut connecting_done = false;
    let started = shared
        .connect_started
        .lock()
        .ok()
        .and_then(|s| *s)
        .unwrap_or_else(Instant::now);
    loop {
        tokio::select! {
            opened = connecting.next(), if !connecting_done => match opened {
                Some((g, elapsed, result)) => {
                    let at = started.elapsed().as_nanos() as u64;
                    shared.last_done_ns.fetch_max(at, Ordering::Relaxed);
                    shared.done.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok((ws, parser)) => {
                            if let Ok(mut latency) = shared.connect_latency.lock() {
                                histogram::record_ns(&mut latency, elapsed.as_nanos() as u64);
                            }
                            members.push(tagged(g, Member::new(ws, shared.job.protocol, parser)));
                        }
                        Err(error) => shared.connect_failed(&error),
                    }
                }
                None => connecting_done = true,
            },
            Some((g, event)) = members.next(), if !members.is_empty() => match event {
                MemberEvent::Closed(Some(1012)) if shared.job.follow_reconnects => {
                    let shared = shared.clone();
                    reopening.push(async move { (g, shared.reopen(g).await) });
                }
                event => shared.on_event(slot, event),
            },
            Some((g, reopened)) = reopening.next(), if !reopening.is_empty() => match reopened {
                Ok((ws, parser)) => {
                    shared.moves.fetch_add(1, Ordering::Relaxed);
                    let count = moves.entry(g).or_default();
                    *count += 1;
                    if *count == 2 {
                        shared.moved_twice.fetch_add(1, Ordering::Relaxed);
                    }
                    members.push(tagged(g, Member::new(ws, shared.job.protocol, parser)));
                }
                Err(error) => {
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                    shared.sample(format!("reopening a member: {error}"));
                }
            },
            _ = stop.changed() => break,
        }
    }
}

/// One task's churn: cycles until `deadline`, `concurrency` at once.
async fn churn(
    shared: Arc<Shared>,
    indices: Vec<u64>,
    deadline: Instant,
    histogram: Arc<Mutex<Histogram<u64>>>,
) {
    let concurrency = (shared.job.concurrency / shared.job.tasks.max(1)).max(1);
    let cycler = shared.clone();
    let cycles = stream::iter(indices.into_iter().cycle())
        .take_while(move |_| futures::future::ready(Instant::now() < deadline))
        .map(move |g| {
            let shared = cycler.clone();
            async move {
                let started = Instant::now();
                let result = async {
                    let (mut ws, mut parser) = shared.open(g).await?;
                    let destination = shared.job.destination(g);
                    client::leave(&mut ws, shared.job.protocol, &mut parser, &destination)
                        .await
                        .map_err(|e| ConnectError::Failed(format!("leave: {e:#}")))?;
                    client::close(ws).await;
                    Ok::<_, ConnectError>(())
                }
                .await;
                (started.elapsed(), result)
            }
        })
        .buffer_unordered(concurrency);
    futures::pin_mut!(cycles);
    while let Some((elapsed, result)) = cycles.next().await {
        shared.done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                if let Ok(mut histogram) = histogram.lock() {
                    histogram::record_ns(&mut histogram, elapsed.as_nanos() as u64);
                }
            }
            Err(error) => shared.connect_failed(&error),
        }
    }
}

/// Writes one event line to stdout.
async fn emit(out: &mut tokio::io::Stdout, event: &Event) -> Result<()> {
    let mut line = serde_json::to_vec(event)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

/// The worker process: reads its job and commands from stdin.
///
/// # Errors
/// When the job cannot be read or stdout is gone.
pub async fn main() -> Result<()> {
    let mut out = tokio::io::stdout();
    let result = run(&mut out).await;
    if let Err(error) = &result {
        let _ = emit(
            &mut out,
            &Event::Fatal {
                message: format!("{error:#}"),
            },
        )
        .await;
    }
    result
}

async fn run(out: &mut tokio::io::Stdout) -> Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let job_line = lines.next_line().await?.context("no job on stdin")?;
    let job: Job = serde_json::from_str(&job_line).context("reading the job")?;
    let mut endpoints = Vec::new();
    for url in &job.endpoints {
        endpoints.push(Endpoint::resolve(url).await?);
    }
    if endpoints.is_empty() {
        bail!("no endpoints");
    }
    let tasks = job.tasks.max(1);
    let shared = Arc::new(Shared {
        endpoints: RwLock::new(endpoints),
        next_endpoint: AtomicU64::new(0),
        moves: AtomicU64::new(0),
        moved_twice: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        timeouts: AtomicU64::new(0),
        closed_1013: AtomicU64::new(0),
        closed_other: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        late: AtomicU64::new(0),
        step: AtomicU32::new(0),
        steps: (0..tasks)
            .map(|_| Mutex::new((histogram::new(), 0)))
            .collect(),
        connect_latency: Mutex::new(histogram::new()),
        connect_started: Mutex::new(None),
        last_done_ns: AtomicU64::new(0),
        samples: Mutex::new(Vec::new()),
        job,
    });
    let shares: Vec<Vec<u64>> = (0..tasks)
        .map(|t| {
            (shared.job.start..shared.job.end)
                .skip(t)
                .step_by(tasks)
                .collect()
        })
        .collect();
    let total = shared.job.end - shared.job.start;
    emit(out, &Event::Started).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let command: Command = serde_json::from_str(&line).context("reading a command")?;
        match command {
            Command::Connect => {
                if let Ok(mut started) = shared.connect_started.lock() {
                    *started = Some(Instant::now());
                }
                for (slot, indices) in shares.iter().enumerate() {
                    handles.push(tokio::spawn(hold(
                        shared.clone(),
                        slot,
                        indices.clone(),
                        stop_rx.clone(),
                    )));
                }
                while shared.done.load(Ordering::Relaxed) < total {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let done = shared.done.load(Ordering::Relaxed);
                    let failed = shared.failed.load(Ordering::Relaxed);
                    emit(out, &Event::Progress { done, failed }).await?;
                }
                let seconds = shared.last_done_ns.load(Ordering::Relaxed) as f64 / 1e9;
                let latency = shared
                    .connect_latency
                    .lock()
                    .map(|h| Wire::from(&h))
                    .unwrap_or_default();
                let failed = shared.failed.load(Ordering::Relaxed);
                let summary = ConnectSummary {
                    connected: total - failed,
                    failed,
                    refused: shared.refused.load(Ordering::Relaxed),
                    timeouts: shared.timeouts.load(Ordering::Relaxed),
                    seconds,
                    latency,
                    samples: shared.samples(),
                };
                emit(out, &Event::Connected(summary)).await?;
            }
            Command::Churn { duration_ms } => {
                let started = Instant::now();
                let deadline = started + Duration::from_millis(duration_ms);
                shared.done.store(0, Ordering::Relaxed);
                shared.failed.store(0, Ordering::Relaxed);
                shared.refused.store(0, Ordering::Relaxed);
                let latency = Arc::new(Mutex::new(histogram::new()));
                let mut churners = Vec::new();
                for indices in &shares {
                    churners.push(tokio::spawn(churn(
                        shared.clone(),
                        indices.clone(),
                        deadline,
                        latency.clone(),
                    )));
                }
                let mut ticker = tokio::time::interval(Duration::from_millis(250));
                while !churners.iter().all(|h| h.is_finished()) {
                    ticker.tick().await;
                    let done = shared.done.load(Ordering::Relaxed);
                    let failed = shared.failed.load(Ordering::Relaxed);
                    emit(out, &Event::Progress { done, failed }).await?;
                }
                let failed = shared.failed.load(Ordering::Relaxed);
                let summary = ChurnSummary {
                    cycles: shared.done.load(Ordering::Relaxed) - failed,
                    failed,
                    refused: shared.refused.load(Ordering::Relaxed),
                    seconds: started.elapsed().as_secs_f64(),
                    latency: latency.lock().map(|h| Wire::from(&h)).unwrap_or_default(),
                    samples: shared.samples(),
                };
                emit(out, &Event::Churned(summary)).await?;
            }
            Command::Report { step } => {
                emit(out, &Event::Report(shared.report(step))).await?;
            }
            Command::Endpoints { urls } => {
                let mut endpoints = Vec::new();
                for url in &urls {
                    endpoints.push(Endpoint::resolve(url).await?);
                }
                if endpoints.is_empty() {
                    bail!("no endpoints");
                }
                if let Ok(mut current) = shared.endpoints.write() {
                    *current = endpoints;
                }
            }
            Command::Moves => {
                let summary = MoveSummary {
                    moves: shared.moves.load(Ordering::Relaxed),
                    moved_twice: shared.moved_twice.load(Ordering::Relaxed),
                    retries: shared.retries.load(Ordering::Relaxed),
                    lost: shared.lost.load(Ordering::Relaxed),
                };
                emit(out, &Event::Moved(summary)).await?;
            }
            Command::Stop => break,
        }
    }
    let _ = stop_tx.send(true);
    for handle in handles {
        let _ = handle.await;
    }
    Ok(())
}

/// The coordinator's side of one worker process; killed and reaped on drop.
pub struct Worker {
    pub index: usize,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Worker {
    /// The worker's process id, for its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a worker with `job`; its events arrive on `events` tagged with `index`.
    ///
    /// # Errors
    /// When this binary cannot be re-executed.
    pub fn start(
        index: usize,
        job: &Job,
        events: mpsc::UnboundedSender<(usize, Event)>,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut command = Process::new(exe);
        command
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: setpgid and prctl are async-signal-safe and touch only the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().context("starting a worker")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("worker without stdout"))?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line).unwrap_or_else(|e| Event::Fatal {
                    message: format!("unreadable worker output {line:?}: {e}"),
                });
                if events.send((index, event)).is_err() {
                    return;
                }
            }
            let _ = events.send((index, Event::Exited));
        });
        let mut worker = Self {
            index,
            stdin: child.stdin.take(),
            child,
        };
        worker.write_line(&serde_json::to_string(job)?)?;
        Ok(worker)
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("worker stdin closed"))?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Sends a command.
    ///
    /// # Errors
    /// When the worker is gone.
    pub fn send(&mut self, command: &Command) -> Result<()> {
        self.write_line(&serde_json::to_string(command)?)
            .with_context(|| format!("worker {} is gone", self.index))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing stdin asks the worker to stop; give it a moment, then kill.
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
