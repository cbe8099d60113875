//! Messages a user can act on (docs/config.md, "Validation"; docs/operator.md, "Running the
//! image"): the `wsgate` binary's exit status, standard error and standard output, as a user
//! or a CI job sees them. Real processes; a NATS that is not there is a closed loopback port.
//!
//! Run serially: `cargo test -p wsgate-tests --test messages -- --test-threads=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use wsgate_tests::{ChildGuard, SOON, Stream, TempDir, eventually, free_port, wsgate_binary};

/// The repository's root, for the files the image ships.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_owned)
}

/// `wsgate` with `args`, none of the test runner's `WSGATE_*` variables, and `env` added.
fn wsgate(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(wsgate_binary());
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("WSGATE_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command.envs(env.iter().copied());
    command
}

/// Runs a command that should end by itself (a configuration error, `--check-config`,
/// `--help`), within [`SOON`].
async fn output(command: Command) -> Result<Output> {
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    tokio::time::timeout(SOON, command.output())
        .await
        .context("wsgate did not exit")?
        .context("starting wsgate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A value error in a file names the file, the line and the key, with the key's whole range.
#[tokio::test]
async fn a_file_value_error_names_the_file_the_line_and_the_key() -> Result<()> {
    let dir = TempDir::new("messages-line")?;
    let file = dir.path().join("wsgate.toml");
    std::fs::write(&file, "version = 1\n\n[limits]\nsend_queue = -5\n")?;
    let out = output(wsgate(
        &["--check-config", &file.display().to_string()],
        &[],
    ))
    .await?;
    ensure!(out.status.code() == Some(2), "{}", out.status);
    assert_eq!(
        text(&out.stderr),
        format!(
            "invalid configuration: limits.send_queue in {}, line 4: must be an integer from 1 to 9223372036854775807\n",
            file.display()
        )
    );
    Ok(())
}

/// A bad value from an environment variable names the variable and not the flag, and one
/// from the flag names the flag and not the variable.
#[tokio::test]
async fn an_error_names_only_the_layer_that_set_the_value() -> Result<()> {
    let base = ["--node", "n", "--listen", "127.0.0.1:0"];
    let out = output(wsgate(&base, &[("WSGATE_SEND_QUEUE", "0")])).await?;
    ensure!(out.status.code() == Some(2), "{}", out.status);
    assert_eq!(
        text(&out.stderr),
        "invalid configuration: limits.send_queue from WSGATE_SEND_QUEUE: must be an integer from 1 to 9223372036854775807\n"
    );

    let out = output(wsgate(&base, &[("WSGATE_MAX_CONNECTIONS", "lots")])).await?;
    ensure!(out.status.code() == Some(2), "{}", out.status);
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(
            "invalid configuration: invalid value 'lots' for WSGATE_MAX_CONNECTIONS: "
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let mut flag = base.to_vec();
    flag.extend(["--send-queue", "0"]);
    let out = output(wsgate(&flag, &[])).await?;
    ensure!(out.status.code() == Some(2), "{}", out.status);
    assert_eq!(
        text(&out.stderr),
        "invalid configuration: limits.send_queue from --send-queue: must be an integer from 1 to 9223372036854775807\n"
    );
    Ok(())
}

/// `--check-config` prints the warnings startup logs (an unknown key of a newer version, a
/// reconnect spread longer than the drain) and still checks the file alone: a bad
/// `WSGATE_*` variable on the checking machine changes nothing.
#[tokio::test]
async fn check_config_prints_startups_warnings_and_checks_the_file_alone() -> Result<()> {
    let dir = TempDir::new("messages-warnings")?;
    let file = dir.path().join("wsgate.toml");
    std::fs::write(
        &file,
        "version = 2\nshiny = true\nallow_anonymous = true\nallowed_origins = [\"https://app.example.com\"]\n[drain]\nseconds = 1\n",
    )?;
    let path = file.display().to_string();
    let out = output(wsgate(
        &["--check-config", &path],
        &[
            ("WSGATE_SEND_QUEUE", "0"),
            ("WSGATE_MAX_CONNECTIONS", "lots"),
        ],
    ))
    .await?;
    let stderr = text(&out.stderr);
    ensure!(out.status.code() == Some(0), "{}: {stderr}", out.status);
    assert_eq!(text(&out.stdout), format!("ok: {path}\n"));
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].starts_with(&format!(
            "warning: ignoring unknown key shiny in {path}, line 2 (file version 2"
        )),
        "{stderr}"
    );
    assert!(
        warnings[1].starts_with(
            "warning: drain.reconnect_spread_ms (10000 ms) is longer than drain.seconds (1 s)"
        ),
        "{stderr}"
    );
    Ok(())
}

/// A secret file that is not there stops the gateway at startup with status 2 and one line
/// naming the key, like every other configuration error.
#[tokio::test]
async fn a_missing_secret_file_exits_2_naming_its_key() -> Result<()> {
    let dir = TempDir::new("messages-secret")?;
    let file = dir.path().join("wsgate.toml");
    let missing = dir.path().join("jwt-secret");
    std::fs::write(
        &file,
        format!(
            "version = 1\nnode = \"n\"\nlisten = \"127.0.0.1:0\"\n[auth]\njwt_secret_file = \"{}\"\n",
            missing.display()
        ),
    )?;
    let out = output(wsgate(&["--config", &file.display().to_string()], &[])).await?;
    let stderr = text(&out.stderr);
    ensure!(out.status.code() == Some(2), "{}: {stderr}", out.status);
    assert!(
        stderr.starts_with(&format!(
            "invalid configuration: auth.jwt_secret_file: cannot read {}: No such file or directory",
            missing.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    Ok(())
}

/// An unreachable NATS is one WARN line naming the URL (without its password) and the cause,
/// not a line per attempt; text logs to a pipe carry no ANSI colours.
#[tokio::test]
async fn an_unreachable_nats_is_one_warning_with_the_url_and_the_cause() -> Result<()> {
    // Nothing listens on a port just handed out and released: every attempt is refused.
    let port = free_port();
    let url = format!("nats://user:hunter2@127.0.0.1:{port}");
    let command = wsgate(
        &["--node", "n", "--listen", "127.0.0.1:0", "--nats-url", &url],
        &[],
    );
    let mut gateway = ChildGuard::spawn("wsgate", command, Duration::from_secs(5))?;
    let logs = gateway.logs().clone();
    let unreachable = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|line| line.contains("nats unreachable"))
            .cloned()
            .collect()
    };
    let first = eventually(SOON, "the nats unreachable warning", || {
        let lines = unreachable(&logs.lines(Stream::Stderr));
        async move { Ok(lines.first().cloned()) }
    })
    .await?;
    assert!(first.contains(" WARN "), "{first}");
    assert!(
        first.contains(&format!("url=\"nats://127.0.0.1:{port}\"")),
        "{first}"
    );
    assert!(first.contains("Connection refused"), "{first}");
    assert!(!first.contains("hunter2"), "{first}");

    // An absence can only be observed over a window: async-nats retries every few hundred
    // milliseconds, so three seconds hold several attempts that must not be logged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    gateway.stop();
    let stderr = logs.lines(Stream::Stderr);
    assert_eq!(unreachable(&stderr).len(), 1, "{}", stderr.join("\n"));
    for line in &stderr {
        assert!(
            !line.contains("IO error\"") && !line.contains("event: client error"),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
    }
    Ok(())
}

/// With `--demo`, startup prints the demo page's address, which serves the page; without a
/// token key and anonymous access, it says connections will be refused instead of
/// inviting them.
#[tokio::test]
async fn startup_names_the_demo_page_or_says_connections_will_be_refused() -> Result<()> {
    let command = wsgate(
        &[
            "--node",
            "n",
            "--listen",
            "127.0.0.1:0",
            "--demo",
            "--allow-anonymous",
        ],
        &[],
    );
    let gateway = ChildGuard::spawn("wsgate-demo", command, Duration::from_secs(5))?;
    let logs = gateway.logs().clone();
    let demo = eventually(SOON, "the demo page line", || {
        let line = logs
            .lines(Stream::Stdout)
            .into_iter()
            .find(|line| line.starts_with("demo page: "));
        async move { Ok(line) }
    })
    .await?;
    let address = demo
        .strip_prefix("demo page: http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .context("not a demo page URL")?
        .parse()
        .with_context(|| format!("{demo:?}"))?;
    let page = wsgate_tests::http::get(address, "/").await?;
    ensure!(page.status == 200, "GET / on {address}: {}", page.status);
    ensure!(page.text().contains("<html"), "not the demo page");
    drop(gateway);

    let command = wsgate(&["--node", "n", "--listen", "127.0.0.1:0"], &[]);
    let gateway = ChildGuard::spawn("wsgate-closed", command, Duration::from_secs(5))?;
    let logs = gateway.logs().clone();
    let lines = eventually(SOON, "the startup lines", || {
        let lines = logs.lines(Stream::Stdout);
        async move { Ok((lines.len() >= 2).then_some(lines)) }
    })
    .await?;
    assert!(
        lines[1].starts_with("every WebSocket connection will be refused: no token key"),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|line| line.starts_with("connect a WebSocket")),
        "{lines:?}"
    );
    Ok(())
}

/// `wsgate --help` groups its options under headings and names `RUST_LOG`.
#[tokio::test]
async fn help_groups_the_options_and_names_rust_log() -> Result<()> {
    let out = output(wsgate(&["--help"], &[])).await?;
    ensure!(out.status.success(), "{}", out.status);
    let help = text(&out.stdout);
    let mut position = 0;
    for heading in [
        "Configuration file:",
        "Listeners:",
        "Cluster:",
        "Access:",
        "Pages and logs:",
        "Limits and shutdown:",
    ] {
        let found = help[position..]
            .find(heading)
            .with_context(|| format!("{heading} missing or out of order:\n{help}"))?;
        position += found;
    }
    ensure!(help.contains("RUST_LOG"), "RUST_LOG is not named:\n{help}");
    Ok(())
}

/// The image's default configuration passes `--check-config`, and the Dockerfile ships it
/// where `WSGATE_CONFIG` points. (No container engine here: the image itself is not built.)
#[tokio::test]
async fn the_images_default_config_is_valid_and_shipped_by_the_dockerfile() -> Result<()> {
    let file = root().join("gateway/image/wsgate.toml");
    let path = file.display().to_string();
    let out = output(wsgate(&["--check-config", &path], &[])).await?;
    ensure!(
        out.status.success(),
        "{}: {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), format!("ok: {path}\n"));
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile"))?;
    for line in [
        "COPY gateway/image/wsgate.toml /etc/wsgate/wsgate.toml",
        "ENV WSGATE_CONFIG=/etc/wsgate/wsgate.toml",
        "EXPOSE 8080 9090",
    ] {
        ensure!(
            dockerfile.lines().any(|l| l.trim() == line),
            "the Dockerfile lacks {line:?}"
        );
    }
    Ok(())
}
