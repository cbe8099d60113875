//! `wsgate-operator`: see the library's documentation for the layout.

use clap::Parser;
use wsgate_operator::Args;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    Args::parse().run().await
}
