//! The `wsgate` binary: parse flags, load the configuration, run.

use std::process::ExitCode;

use wsgate::{Args, Config};

fn main() -> ExitCode {
    let args = match Args::try_parse_command_line() {
        Ok(args) => args,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            // One line, as for every other configuration error.
            let text = error.to_string();
            let line = text.lines().next().unwrap_or_default();
            eprintln!(
                "invalid configuration: {}",
                line.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.check_config {
        return match Config::from_file(path) {
            Ok(_) => {
                println!("ok: {}", path.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(2)
            }
        };
    }
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    wsgate::init_tracing(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wsgate::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}
