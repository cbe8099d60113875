//! What the kernel says about a process: resident memory and CPU time from `/proc`, and the
//! open-file limit.

use rlimit::Resource;
use serde::Serialize;

/// Raises the soft open-file limit to the hard one: every connection is a file, and the soft
/// limit is often far below what the hard limit allows.
pub fn raise_open_file_limit() {
    if let Ok((soft, hard)) = Resource::NOFILE.get()
        && soft < hard
    {
        // Best effort: a refused raise leaves the soft limit as it was, still usable.
        let _ = Resource::NOFILE.set(hard, hard);
    }
}

/// A point-in-time reading of one process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// User plus system CPU time since the process started, seconds.
    pub cpu_seconds: f64,
}

/// Reads `pid`'s resident memory and CPU time; `None` once the process is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    Some(Sample {
        rss_kib: rss_kib(pid)?,
        cpu_seconds: cpu_seconds(pid)?,
    })
}

/// `VmRSS` from `/proc/<pid>/status`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `utime + stime` from `/proc/<pid>/stat`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are 11 and 12 after the name (state is field 3).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

/// The one-minute load average: how busy the machine was besides this run (on a shared
/// machine other work makes figures noisy).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
