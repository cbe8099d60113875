//! `wsgate-bench`: a load generator and reporter for wsgate and the servers users would pick
//! instead (nats-server's WebSocket listener as the reference; Socket.IO and Sockudo).
//!
//! The layout follows the life of a run:
//! - [`args`]: the command line, one subcommand per scenario;
//! - [`stack`]: the processes under test (nats-server, gateways, peers), started on free loopback
//!   ports and killed and reaped when their guard drops;
//! - [`proc`]: resident memory and CPU time of those processes, read from `/proc`;
//! - [`client`]: one WebSocket connection speaking wsgate's protocol, the NATS text protocol,
//!   Socket.IO or the Pusher protocol;
//! - [`worker`]: the processes holding the receiving connections (this binary re-executed),
//!   and the line protocol the coordinator drives them with;
//! - [`prefill`]: fills the history with many rooms before a run (`--prefill-rooms`);
//! - [`publisher`]: paced publishers with a send timestamp in every message;
//! - [`pusher_api`]: the Pusher HTTP events API (signed requests), how Sockudo's publishers
//!   publish;
//! - [`scenario`]: `idle`, `storm`, `fanout`, `direct`, `churn` and `scale`;
//! - [`scale`]: the scale-out's sampling of each gateway's connections, and its figures;
//! - [`report`]: the figures, as a table or as JSON, and the sanity checks of `--check`;
//! - [`plot`]: the publishing steps of reports drawn as an SVG (`--plot`, and `plot`).

mod args;
mod client;
mod histogram;
mod plot;
mod prefill;
mod proc;
mod publisher;
mod pusher_api;
mod report;
mod scale;
mod scenario;
mod stack;
mod worker;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Args::parse();
    proc::raise_open_file_limit();
    match scenario::main(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("wsgate-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
