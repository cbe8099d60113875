//! Child processes that die with their guard, temporary directories, free ports.
//!
//! Every process a test starts lives in a [`ChildGuard`]: its `Drop` sends SIGTERM,
//! waits a short grace, sends SIGKILL and reaps the child, so a failing test (a panic,
//! an early `?`) never leaves a gateway or a nats-server behind. Output is drained by
//! two threads into a [`LogBuffer`] so the pipes never fill, and the last lines are
//! printed when the guard drops (libtest shows them only for failing tests).

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// SIGTERM, for [`ChildGuard::signal`] and the gateway's drain.
pub const SIGTERM: i32 = libc::SIGTERM;
/// SIGKILL: the process gets no chance to clean up (a crashed replica).
pub const SIGKILL: i32 = libc::SIGKILL;
/// SIGINT (Ctrl-C).
pub const SIGINT: i32 = libc::SIGINT;

/// How many lines of a process's output are kept.
const LOG_LINES: usize = 4000;
/// How many lines a guard prints when it drops.
const LOG_TAIL_ON_DROP: usize = 80;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The recent output of one process, shared with the threads that drain its pipes.
#[derive(Debug, Default)]
pub struct LogBuffer {
    lines: Mutex<VecDeque<(Stream, String)>>,
    /// Pipes that reached end of file (0, 1 or 2).
    closed: AtomicU64,
}

impl LogBuffer {
    fn push(&self, stream: Stream, line: String) {
        let mut lines = self.lines.lock().unwrap();
        if lines.len() == LOG_LINES {
            lines.pop_front();
        }
        lines.push_back((stream, line));
    }

    /// The kept lines of one stream, oldest first.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The last `n` lines of both streams, interleaved as they arrived, one string.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap();
        let skip = lines.len().saturating_sub(n);
        let mut out = String::new();
        for (stream, line) in lines.iter().skip(skip) {
            let tag = match stream {
                Stream::Stdout => "out",
                Stream::Stderr => "err",
            };
            out.push_str(tag);
            out.push_str("| ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// The last `n` lines of one stream, one string.
    pub fn tail_of(&self, stream: Stream, n: usize) -> String {
        let lines = self.lines(stream);
        let skip = lines.len().saturating_sub(n);
        lines[skip..].join("\n")
    }

    /// True once both pipes reached end of file.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) >= 2
    }

    fn drain(self: Arc<Self>, stream: Stream, pipe: impl Read + Send + 'static) {
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        self.push(stream, line.trim_end_matches(['\n', '\r']).to_owned());
                    }
                }
            }
            self.closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

/// A child process that is stopped and reaped when the guard drops.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    /// Set once the child has been reaped; after that its pid may belong to someone
    /// else, so no signal is sent any more.
    status: Option<ExitStatus>,
    logs: Arc<LogBuffer>,
    /// Time between SIGTERM and SIGKILL on drop.
    grace: Duration,
}

impl ChildGuard {
    /// Spawns `command` with piped stdout and stderr (stdin closed).
    ///
    /// # Errors
    /// When the program cannot be started.
    pub fn spawn(name: impl Into<String>, mut command: Command, grace: Duration) -> Result<Self> {
        let name = name.into();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let logs = Arc::new(LogBuffer::default());
        if let Some(stdout) = child.stdout.take() {
            logs.clone().drain(Stream::Stdout, stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            logs.clone().drain(Stream::Stderr, stderr);
        }
        Ok(Self {
            name,
            child,
            status: None,
            logs,
            grace,
        })
    }

    /// The name given at spawn, used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The output collected so far.
    pub fn logs(&self) -> &Arc<LogBuffer> {
        &self.logs
    }

    /// Reaps the child if it has exited, without blocking.
    ///
    /// # Errors
    /// When `waitpid` fails.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?;
        }
        Ok(self.status)
    }

    /// Sends a signal, unless the child was already reaped.
    ///
    /// # Errors
    /// When `kill(2)` fails for a child that was not reaped.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            bail!(
                "kill({pid}, {signal}) for {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Waits (polling, without blocking the runtime) until the child exits.
    ///
    /// # Errors
    /// When it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} still running {timeout:?} later; last output:\n{}",
                    self.name,
                    self.logs.tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL and reap, at once (a crash, or a NATS outage).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.status
    }

    /// SIGTERM, up to `grace` for the process to exit, then SIGKILL; always reaps.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if matches!(self.try_status(), Ok(Some(_))) {
            return self.status;
        }
        if self.signal(SIGTERM).is_ok() {
            let deadline = Instant::now() + self.grace;
            while Instant::now() < deadline {
                if matches!(self.try_status(), Ok(Some(_))) {
                    return self.status;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.kill()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let status = self.stop();
        eprintln!(
            "--- {} (pid {}) stopped: {status:?}; last output:\n{}--- end of {}",
            self.name,
            self.child.id(),
            self.logs.tail(LOG_TAIL_ON_DROP),
            self.name
        );
    }
}

/// A directory under the system temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, empty directory whose name starts with `prefix`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(prefix: &str) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "wsgate-tests-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Replaces the file at `path` the way a Secret update does: written beside it, then renamed
/// over it, so a reader never sees it half-written.
///
/// # Errors
/// When either step fails.
pub fn replace_file(path: &Path, contents: &str) -> Result<()> {
    let staged = path.with_extension("new");
    std::fs::write(&staged, contents).with_context(|| format!("writing {}", staged.display()))?;
    std::fs::rename(&staged, path).with_context(|| format!("renaming over {}", path.display()))?;
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released), and
/// that this process has not handed out before: the kernel may give a released port to the
/// next bind to port 0 again, and two servers of one test handed the same port would clash
/// (a three-server NATS cluster once got one client port twice).
///
/// # Panics
/// When no port can be bound at all, or none is new after many tries.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no new port on 127.0.0.1 after 1000 binds");
}

/// Looks `program` up on `PATH` like a shell does.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Ports handed out in a row are all different, though the kernel may offer a released
    /// port again.
    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..300).map(|_| super::free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
