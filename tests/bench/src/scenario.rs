//! The scenarios, and the coordinator that runs one against wsgate and each peer: start the
//! servers, start the workers, connect, load, measure, stop.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use crate::args::{Args, Command, Common, LoadArgs, Peer, Proto};
use crate::client::{self, Mode, Protocol};
use crate::histogram::{self, Latency};
use crate::proc::Sample;
use crate::publisher::{Credentials, Publishers};
use crate::pusher_api::PusherApp;
use crate::report::{self, Report, Run, ServerFigures};
use crate::stack::{self, Stack};
use crate::worker::{self, Event, Job, Worker};

/// Runs the command line: a worker, or a scenario followed by its report.
///
/// # Errors
/// When a scenario cannot complete.
pub fn main(args: Args) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Command::Worker = args.command {
        runtime.block_on(worker::main())?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Plot(plot) = args.command {
        crate::plot::from_files(&plot)?;
        return Ok(ExitCode::SUCCESS);
    }
    let scenario = Scenario::from(args.command)?;
    let common = scenario.common().clone();
    let report = runtime.block_on(async {
        tokio::select! {
            report = run(&scenario) => report,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    })?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &common.plot {
        crate::plot::report(path, &report)?;
        if !common.quiet {
            eprintln!("plot written to {}", path.display());
        }
    }
    if common.check {
        let problems = report.insanities();
        if !problems.is_empty() {
            for problem in problems {
                eprintln!("insane: {problem}");
            }
            return Ok(ExitCode::from(3));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A scenario with its arguments.
enum Scenario {
    Idle(crate::args::IdleArgs),
    Storm(crate::args::StormArgs),
    Fanout(crate::args::FanoutArgs),
    Direct(crate::args::DirectArgs),
    Churn(crate::args::ChurnArgs),
    Scale(crate::args::ScaleArgs),
}

impl Scenario {
    fn from(command: Command) -> Result<Self> {
        Ok(match command {
            Command::Idle(a) => Self::Idle(a),
            Command::Storm(a) => Self::Storm(a),
            Command::Fanout(a) => Self::Fanout(a),
            Command::Direct(a) => Self::Direct(a),
            Command::Churn(a) => Self::Churn(a),
            Command::Scale(mut a) => {
                // Gateways that join later find the others through NATS.
                a.common.nats = true;
                Self::Scale(a)
            }
            Command::Worker | Command::Plot(_) => bail!("not a scenario"),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Idle(_) => "idle",
            Self::Storm(_) => "storm",
            Self::Fanout(_) => "fanout",
            Self::Direct(_) => "direct",
            Self::Churn(_) => "churn",
            Self::Scale(_) => "scale",
        }
    }

    fn common(&self) -> &Common {
        match self {
            Self::Idle(a) => &a.common,
            Self::Storm(a) => &a.common,
            Self::Fanout(a) => &a.common,
            Self::Direct(a) => &a.common,
            Self::Churn(a) => &a.common,
            Self::Scale(a) => &a.common,
        }
    }

    /// `(members, members per room, join, mode)`.
    fn members(&self) -> (u64, u64, bool, Mode) {
        match self {
            Self::Idle(a) => (
                a.connections,
                a.connections.div_ceil(a.rooms.max(1)),
                true,
                Mode::Rooms,
            ),
            Self::Storm(a) => (a.connections, 1, false, Mode::Rooms),
            Self::Fanout(a) => (a.rooms * a.members, a.members, true, Mode::Rooms),
            Self::Direct(a) => (a.users, 1, true, Mode::Direct),
            Self::Scale(a) => (
                a.connections,
                a.connections.div_ceil(a.rooms.max(1)),
                true,
                Mode::Rooms,
            ),
            Self::Churn(a) => {
                let indices = (a.concurrency as u64 * 8).max(a.rooms);
                (indices, indices.div_ceil(a.rooms.max(1)), true, Mode::Rooms)
            }
        }
    }

    /// Sections the scenario adds to the generated gateway configuration.
    fn gateway_config(&self) -> String {
        match self {
            Self::Scale(a) => format!(
                "\n[nats]\nnode_heartbeat_ms = 500\n\n[rebalance]\nmin_age_ms = {}\nspread_ms = {}\n",
                a.min_age_ms, a.spread_ms
            ),
            _ => String::new(),
        }
    }

    /// The protocol wsgate is measured in: Pusher's for `fanout --proto pusher`, else its own.
    fn wsgate_protocol(&self) -> Protocol {
        match self {
            Self::Fanout(a) if a.proto == Proto::Pusher => Protocol::Pusher,
            _ => Protocol::Wsgate,
        }
    }

    fn load(&self) -> Option<&LoadArgs> {
        match self {
            Self::Fanout(a) => Some(&a.load),
            Self::Direct(a) => Some(&a.load),
            _ => None,
        }
    }
}

/// Runs the scenario against wsgate, then each peer.
async fn run(scenario: &Scenario) -> Result<Report> {
    let common = scenario.common();
    if common.per_worker == 0 || common.tasks == 0 {
        bail!("--per-worker and --tasks must be at least 1");
    }
    // Pusher channels keep no history: these flags would measure nothing in that protocol.
    if scenario.wsgate_protocol() == Protocol::Pusher
        && (common.history.is_some() || common.prefill_rooms > 0)
    {
        bail!("--history and --prefill-rooms measure native rooms: not with --proto pusher");
    }
    let mut report = Report {
        scenario: scenario.name().to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        runs: Vec::new(),
        skipped: Vec::new(),
        ratios: Vec::new(),
        step_bounds: Vec::new(),
    };
    report
        .runs
        .push(run_system(scenario, System::Wsgate).await?);
    let mut peers = common.compare.clone();
    peers.dedup();
    if matches!(scenario, Scenario::Scale(_)) && !peers.is_empty() {
        report
            .skipped
            .push("scale runs wsgate only: no peer rebalances its connections".to_owned());
        peers.clear();
    }
    for peer in peers {
        match peer {
            Peer::Nats if !stack::available(&common.nats_server_bin) => {
                report.skipped.push(format!(
                    "nats: {} not found in PATH (install nats-server)",
                    common.nats_server_bin.display()
                ))
            }
            Peer::Nats => report.runs.push(run_system(scenario, System::Nats).await?),
            Peer::Socketio => match stack::socketio_missing(common) {
                Some(why) => report.skipped.push(format!("socketio: {why}")),
                None => report
                    .runs
                    .push(run_system(scenario, System::Socketio).await?),
            },
            Peer::Sockudo => match stack::sockudo_missing(common) {
                Some(why) => report.skipped.push(format!("sockudo: {why}")),
                None => report
                    .runs
                    .push(run_system(scenario, System::Sockudo).await?),
            },
        }
    }
    report.compute_ratios();
    Ok(report)
}

/// The system a run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    Wsgate,
    Nats,
    Socketio,
    Sockudo,
}

/// Whether `server`'s memory is the system's own (per connection, and churn's growth): the
/// gateways for wsgate and the nodes for Sockudo, not the nats-server they share (listed
/// separately); every process for the others.
fn counts_as_node(system: &str, server: &str) -> bool {
    match system {
        "wsgate" | "sockudo" => server.starts_with(system),
        _ => true,
    }
}

/// A progress bar on standard error (hidden with `--quiet`).
fn bar(common: &Common, length: u64, message: String) -> ProgressBar {
    if common.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Waits until every worker sent an event `pick` accepts, moving `bar` with their progress.
pub(crate) async fn gather<T>(
    events: &mut mpsc::UnboundedReceiver<(usize, Event)>,
    workers: usize,
    bar: Option<&ProgressBar>,
    stack: &mut Stack,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> Result<Vec<T>> {
    let mut results: Vec<Option<T>> = (0..workers).map(|_| None).collect();
    let mut progress = vec![0u64; workers];
    let quiet_limit = Duration::from_secs(120);
    while results.iter().any(Option::is_none) {
        let Ok(received) = tokio::time::timeout(quiet_limit, events.recv()).await else {
            stack.check_alive()?;
            bail!("no word from the workers for {quiet_limit:?}");
        };
        let (index, event) = received.ok_or_else(|| anyhow!("workers gone"))?;
        match event {
            Event::Progress { done, .. } => {
                progress[index] = done;
                if let Some(bar) = bar {
                    bar.set_position(progress.iter().sum());
                }
            }
            Event::Fatal { message } => bail!("worker {index}: {message}"),
            Event::Exited => {
                stack.check_alive()?;
                bail!("worker {index} exited");
            }
            other => {
                if let Some(value) = pick(other) {
                    results[index] = Some(value);
                }
            }
        }
    }
    Ok(results.into_iter().flatten().collect())
}

/// Runs the scenario against one system.
async fn run_system(scenario: &Scenario, system: System) -> Result<Run> {
    let common = scenario.common();
    let (mut stack, protocol, name) = match system {
        System::Wsgate => {
            let protocol = scenario.wsgate_protocol();
            // In Pusher's protocol the gateways serve a generated app, as Sockudo's nodes do.
            let app = (protocol == Protocol::Pusher).then(PusherApp::generate);
            (
                Stack::wsgate(common, &scenario.gateway_config(), app)?,
                protocol,
                "wsgate",
            )
        }
        System::Nats => (Stack::nats_reference(common)?, Protocol::Nats, "nats"),
        System::Socketio => (Stack::socketio(common)?, Protocol::Socketio, "socketio"),
        System::Sockudo => (Stack::sockudo(common)?, Protocol::Pusher, "sockudo"),
    };
    let setup = if stack.servers.is_empty() {
        format!("target {}", stack.endpoints.join(", "))
    } else {
        let names = stack
            .servers
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(" + ");
        match crate::stack::node_threads(common) {
            Some(threads) if matches!(system, System::Wsgate | System::Sockudo) => {
                let each = if stack.endpoints.len() > 1 {
                    " each"
                } else {
                    ""
                };
                let plural = if threads == 1 { "" } else { "s" };
                format!("{names}; {threads} thread{plural}{each}")
            }
            _ => names,
        }
    };
    if !common.quiet && !common.json {
        eprintln!("{}: {setup}", report::label(name, Some(protocol)));
    }
    let (members, members_per_room, join, mode) = scenario.members();
    let jwt_secret = stack.jwt_secret.clone();
    if mode == Mode::Direct && protocol == Protocol::Wsgate && jwt_secret.is_none() {
        bail!("direct against --target needs --jwt-secret");
    }

    if common.prefill_rooms > 0 && protocol == Protocol::Wsgate {
        let (Some(url), Some(secret)) = (stack.endpoints.first(), jwt_secret.as_deref()) else {
            bail!("--prefill-rooms needs a gateway and its JWT secret");
        };
        let took = crate::prefill::prefill(url, secret, common.prefill_rooms).await?;
        if !common.quiet && !common.json {
            eprintln!(
                "{name}: prefilled {} history rooms in {:.1} s",
                common.prefill_rooms,
                took.as_secs_f64()
            );
        }
    }

    // Let the servers settle, then read where they start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = stack.sample();

    let worker_count = match (scenario, common.workers) {
        (_, Some(n)) => n.max(1),
        (Scenario::Churn(_), None) => 1,
        _ => members.div_ceil(common.per_worker).max(1) as usize,
    }
    .min(members.max(1) as usize);
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut workers = Vec::new();
    let per = members.div_ceil(worker_count as u64);
    for index in 0..worker_count {
        let start = index as u64 * per;
        let end = ((index as u64 + 1) * per).min(members);
        let job = Job {
            protocol,
            mode,
            endpoints: stack.endpoints.clone(),
            start,
            end,
            members_per_room,
            join,
            tasks: common.tasks,
            concurrency: match scenario {
                Scenario::Churn(a) => a.concurrency,
                _ => common.connect_concurrency,
            }
            .div_ceil(worker_count)
            .max(1),
            source_ips: common.source_ips,
            connect_timeout_ms: common.connect_timeout_ms,
            jwt_secret: jwt_secret.clone(),
            follow_reconnects: matches!(scenario, Scenario::Scale(_)),
        };
        workers.push(Worker::start(index, &job, tx.clone())?);
    }
    drop(tx);
    gather(&mut events, worker_count, None, &mut stack, |e| {
        matches!(e, Event::Started).then_some(())
    })
    .await?;

    let load_pids: Vec<u32> = std::iter::once(std::process::id())
        .chain(workers.iter().map(Worker::pid))
        .collect();
    let load_cpu = || -> f64 {
        load_pids
            .iter()
            .filter_map(|&pid| crate::proc::sample(pid))
            .map(|s| s.cpu_seconds)
            .sum()
    };
    let load_cpu_before = load_cpu();
    let mut run = Run {
        system: name.to_owned(),
        protocol: Some(protocol),
        setup,
        connect: None,
        servers: Vec::new(),
        load_generator_cpu_seconds: 0.0,
        load_average: (crate::proc::load_average(), 0.0),
        rss_per_connection_kib: None,
        steps: Vec::new(),
        best: None,
        churn: None,
        scale: None,
        closed_1013: 0,
        closed_other: 0,
        member_errors: 0,
        samples: Vec::new(),
    };

    if let Scenario::Churn(args) = scenario {
        churn(
            args,
            &mut stack,
            &mut workers,
            &mut events,
            &baseline,
            &mut run,
        )
        .await?;
    } else {
        let started = Instant::now();
        for worker in &mut workers {
            worker.send(&worker::Command::Connect)?;
        }
        let progress = bar(common, members, format!("{name}: connecting"));
        let summaries = gather(
            &mut events,
            worker_count,
            Some(&progress),
            &mut stack,
            |e| match e {
                Event::Connected(summary) => Some(summary),
                _ => None,
            },
        )
        .await?;
        progress.finish_and_clear();
        // The slowest worker's phase, without the progress-reporting granularity.
        let seconds = summaries
            .iter()
            .map(|s| s.seconds)
            .fold(0.0, f64::max)
            .min(started.elapsed().as_secs_f64());
        let mut latency = histogram::new();
        let mut connect = report::Connect {
            attempted: members,
            established: 0,
            failed: 0,
            refused: 0,
            timeouts: 0,
            seconds,
            per_second: 0.0,
            latency: Latency::default(),
        };
        for summary in &summaries {
            connect.established += summary.connected;
            connect.failed += summary.failed;
            connect.refused += summary.refused;
            connect.timeouts += summary.timeouts;
            summary.latency.add_to(&mut latency);
            for sample in &summary.samples {
                if run.samples.len() < 5 {
                    run.samples.push(format!("connect: {sample}"));
                }
            }
        }
        connect.per_second = connect.established as f64 / seconds.max(1e-9);
        connect.latency = Latency::of(&latency);
        let established = connect.established;
        run.connect = Some(connect);
        stack.check_alive()?;

        match scenario {
            Scenario::Idle(args) => {
                let hold = bar(common, args.hold_seconds, format!("{name}: holding"));
                for _ in 0..args.hold_seconds {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    hold.inc(1);
                }
                hold.finish_and_clear();
            }
            Scenario::Storm(_) | Scenario::Churn(_) => {}
            Scenario::Scale(args) => {
                run.scale =
                    Some(crate::scale::run(args, &mut stack, &mut workers, &mut events).await?);
            }
            Scenario::Fanout(_) | Scenario::Direct(_) => {
                let load = scenario.load().ok_or_else(|| anyhow!("no load"))?;
                publish(
                    load,
                    common,
                    protocol,
                    mode,
                    members,
                    members_per_room,
                    &mut stack,
                    &mut workers,
                    &mut events,
                    &mut run,
                )
                .await?;
            }
        }
        let after = stack.sample();
        run.servers = figures(&stack, &baseline, &after);
        let grown: i64 = run
            .servers
            .iter()
            .filter(|s| counts_as_node(name, &s.name))
            .map(|s| s.rss_after_kib as i64 - s.rss_before_kib as i64)
            .sum();
        if !stack.servers.is_empty() && established > 0 {
            run.rss_per_connection_kib = Some(grown as f64 / established as f64);
        }
        // The member counts of the last report (or a final one) say who was closed.
        if run.steps.is_empty() {
            for worker in &mut workers {
                worker.send(&worker::Command::Report { step: 0 })?;
            }
            let reports = gather(&mut events, worker_count, None, &mut stack, |e| match e {
                Event::Report(r) => Some(r),
                _ => None,
            })
            .await?;
            for r in reports {
                run.closed_1013 += r.closed_1013;
                run.closed_other += r.closed_other;
                run.member_errors += r.errors;
                for sample in r.samples {
                    if run.samples.len() < 5 {
                        run.samples.push(sample);
                    }
                }
            }
        }
    }
    run.load_generator_cpu_seconds = load_cpu() - load_cpu_before;
    run.load_average.1 = crate::proc::load_average();
    for worker in &mut workers {
        let _ = worker.send(&worker::Command::Stop);
    }
    drop(workers);
    stack.stop();
    Ok(run)
}

/// The servers' figures between two samples.
fn figures(stack: &Stack, before: &[Sample], after: &[Sample]) -> Vec<ServerFigures> {
    stack
        .servers
        .iter()
        .zip(before.iter().zip(after))
        .map(|(server, (before, after))| ServerFigures {
            name: server.name.clone(),
            pid: server.pid,
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
            cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        })
        .collect()
}

/// Publishing steps of `fanout` and `direct`: one at `--rate`, or a ramp.
#[allow(clippy::too_many_arguments)]
async fn publish(
    load: &LoadArgs,
    common: &Common,
    protocol: Protocol,
    mode: Mode,
    members: u64,
    members_per_room: u64,
    stack: &mut Stack,
    workers: &mut [Worker],
    events: &mut mpsc::UnboundedReceiver<(usize, Event)>,
    run: &mut Run,
) -> Result<()> {
    let destinations: Vec<String> = match mode {
        Mode::Rooms => (0..members.div_ceil(members_per_room.max(1)))
            .map(client::room_name)
            .collect(),
        Mode::Direct => (0..members).map(client::user_name).collect(),
    };
    let mut publishers = Publishers::connect(
        load.publishers,
        &stack.endpoints,
        protocol,
        mode,
        &destinations,
        Credentials {
            jwt_secret: stack.jwt_secret.as_deref(),
            pusher_app: stack.pusher_app.as_ref(),
            pusher_api: &stack.pusher_api,
        },
        load.padding,
    )
    .await?;
    let duration = Duration::from_secs(load.duration_seconds.max(1));
    let mut step_index = 0u32;
    let mut rate = load.rate.max(0.1);
    let mut good: Option<f64> = None;
    let mut bad: Option<f64> = None;
    let mut lost_members = false;
    // `--ramp-through`: every step from `--rate` up to that rate, passing or not.
    let sweep_to = load.ramp_through.map(|to| to.max(rate));
    let ramping = load.ramp || sweep_to.is_some();
    let steps_allowed = if ramping { load.ramp_steps.max(1) } else { 1 };
    let mut refining = 0;
    loop {
        let progress = bar(
            common,
            duration.as_secs(),
            format!("{}: {rate:.0} msgs/s", run.label()),
        );
        let ticker = {
            let progress = progress.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    progress.inc(1);
                }
            })
        };
        let published = publishers.run(rate, duration, step_index).await;
        ticker.abort();
        progress.finish_and_clear();
        let published = published?;
        tokio::time::sleep(Duration::from_millis(load.grace_ms)).await;
        for worker in workers.iter_mut() {
            worker.send(&worker::Command::Report { step: step_index })?;
        }
        let reports = gather(events, workers.len(), None, stack, |e| match e {
            Event::Report(r) => Some(r),
            _ => None,
        })
        .await?;
        let mut latency = histogram::new();
        let (mut received, mut closed_1013, mut closed_other, mut errors) = (0, 0, 0, 0);
        for r in &reports {
            received += r.received;
            closed_1013 += r.closed_1013;
            closed_other += r.closed_other;
            errors += r.errors;
            r.latency.add_to(&mut latency);
            for sample in &r.samples {
                if run.samples.len() < 5 && !run.samples.contains(sample) {
                    run.samples.push(sample.clone());
                }
            }
        }
        let expected = match (protocol, mode) {
            (Protocol::Wsgate, Mode::Direct) => published.delivered,
            (_, Mode::Direct) => published.ok,
            (_, Mode::Rooms) => published.ok * members_per_room,
        };
        let latency = Latency::of(&latency);
        let mut failure = None;
        if received < expected {
            failure = Some(format!("{} not delivered", expected - received));
        }
        if latency.p99_ms > load.p99_ms {
            failure = Some(format!("p99 over {} ms", load.p99_ms));
        }
        if published.sent > published.ok || !published.errors.is_empty() {
            failure = Some(format!("publish errors {:?}", published.errors));
        }
        if published.seconds > duration.as_secs_f64() * 1.1 + 0.1 {
            failure = Some("publishers fell behind".to_owned());
        }
        if closed_1013 + closed_other > run.closed_1013 + run.closed_other {
            failure = Some(format!(
                "{} members closed",
                closed_1013 + closed_other - run.closed_1013 - run.closed_other
            ));
            lost_members = true;
        }
        if errors > run.member_errors {
            failure = Some(format!("{} member errors", errors - run.member_errors));
        }
        run.closed_1013 = closed_1013;
        run.closed_other = closed_other;
        run.member_errors = errors;
        let step = report::Step {
            rate,
            sent: published.sent,
            accepted: published.ok,
            expected,
            received,
            deliveries_per_second: received as f64 / duration.as_secs_f64(),
            demanded_per_second: match mode {
                Mode::Rooms => rate * members_per_room as f64,
                Mode::Direct => rate,
            },
            latency,
            publish_errors: published.errors,
            passed: failure.is_none(),
            failure,
        };
        if !common.quiet && !common.json {
            eprintln!(
                "{}: {rate:.0} msgs/s: {}/{} delivered, p99 {:.2} ms: {}",
                run.label(),
                step.received,
                step.expected,
                step.latency.p99_ms,
                step.failure.as_deref().unwrap_or("pass")
            );
        }
        let passed = step.passed;
        if passed && run.best.as_ref().is_none_or(|b| b.rate < rate) {
            run.best = Some(step.clone());
        }
        run.steps.push(step);
        step_index += 1;
        if !ramping {
            break;
        }
        let factor = load.ramp_factor.max(1.01);
        if let Some(to) = sweep_to {
            if lost_members || rate >= to {
                break;
            }
            rate = (rate * factor).min(to);
            stack.check_alive()?;
            continue;
        }
        if passed {
            good = Some(rate);
        } else {
            bad = Some(rate);
        }
        match (good, bad) {
            // Up until a step fails.
            (Some(_), None) if step_index < steps_allowed => rate *= factor,
            // The first step failed: down until one passes (while steps still carry messages).
            (None, Some(_))
                if step_index < steps_allowed
                    && !lost_members
                    && rate / factor * duration.as_secs_f64() >= 10.0 =>
            {
                rate /= factor;
            }
            (Some(g), Some(b)) if refining < load.refine_steps && !lost_members => {
                refining += 1;
                rate = (g + b) / 2.0;
            }
            _ => break,
        }
        stack.check_alive()?;
    }
    publishers.close().await;
    Ok(())
}

/// `churn`: warm up, read memory, churn, settle, read memory again.
async fn churn(
    args: &crate::args::ChurnArgs,
    stack: &mut Stack,
    workers: &mut [Worker],
    events: &mut mpsc::UnboundedReceiver<(usize, Event)>,
    baseline: &[Sample],
    run: &mut Run,
) -> Result<()> {
    let common = &args.common;
    let gateway_rss = |samples: &[Sample], stack: &Stack| -> u64 {
        stack
            .servers
            .iter()
            .zip(samples)
            .filter(|(s, _)| counts_as_node(&run.system, &s.name))
            .map(|(_, sample)| sample.rss_kib)
            .sum()
    };
    let mut phase =
        async |seconds: u64, label: &str, stack: &mut Stack| -> Result<Vec<worker::ChurnSummary>> {
            for worker in workers.iter_mut() {
                worker.send(&worker::Command::Churn {
                    duration_ms: seconds * 1000,
                })?;
            }
            let progress = bar(common, 0, format!("{}: {label}", run.system));
            progress.set_style(
                ProgressStyle::with_template("{msg:>24} {pos} cycles {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let count = workers.len();
            let summaries = gather(events, count, Some(&progress), stack, |e| match e {
                Event::Churned(s) => Some(s),
                _ => None,
            })
            .await;
            progress.finish_and_clear();
            summaries
        };
    if args.warmup_seconds > 0 {
        phase(args.warmup_seconds, "warming up", stack).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = stack.sample();
    let summaries = phase(args.duration_seconds.max(1), "churning", stack)
        .await
        .context("churn")?;
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let end = stack.sample();
    let mut latency = histogram::new();
    let (mut cycles, mut failed, mut refused, mut seconds) = (0, 0, 0, 0.0f64);
    for s in &summaries {
        cycles += s.cycles;
        failed += s.failed;
        refused += s.refused;
        seconds = seconds.max(s.seconds);
        s.latency.add_to(&mut latency);
        for sample in &s.samples {
            if run.samples.len() < 5 {
                run.samples.push(sample.clone());
            }
        }
    }
    let rss_start_kib = gateway_rss(&start, stack);
    let rss_end_kib = gateway_rss(&end, stack);
    run.servers = figures(stack, baseline, &end);
    run.churn = Some(report::Churn {
        cycles,
        failed,
        refused,
        seconds,
        cycles_per_second: cycles as f64 / seconds.max(1e-9),
        latency: Latency::of(&latency),
        rss_start_kib,
        rss_end_kib,
        growth_percent: if rss_start_kib > 0 {
            (rss_end_kib as f64 - rss_start_kib as f64) * 100.0 / rss_start_kib as f64
        } else {
            0.0
        },
    });
    Ok(())
}
