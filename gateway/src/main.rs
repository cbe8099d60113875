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
            // One line, as for every other configuration error, naming the flag or the
            // variable that carried the bad value.
            eprintln!("{}", Args::error_line(&error));
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.check_config {
        // The file alone, with the defaults: a CI check must not depend on the CI machine's
        // environment. Its warnings are the ones the gateway logs at startup.
        return match Config::from_file(path) {
            Ok(config) => {
                for warning in &config.warnings {
                    eprintln!("warning: {warning}");
                }
                println!("ok: {}", path.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(2)
            }
        };
    }
    // A named file that cannot be read (a Secret not mounted) is a configuration error too.
    let config = match Config::load(args).and_then(|config| config.check_files().map(|()| config)) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    wsgate::init_tracing(config.log_format);
    // Always sized here: left to itself the runtime reads TOKIO_WORKER_THREADS and panics on a
    // value that is not a positive number.
    let threads = config.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
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
