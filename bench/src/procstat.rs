//! What the services under load cost, read from `/proc`: CPU time (`/proc/<pid>/stat`) and
//! peak resident memory (`VmHWM` in `/proc/<pid>/status`), over the measured window only.

use std::{collections::BTreeMap, fs, io, path::PathBuf, str::FromStr, time::Duration};

/// A process to watch, given on the command line as `NAME=PID` (`user=4242`).
/// The measured window of a scenario, as `load` and `watch` take it on the command line.
#[derive(clap::Args, Debug)]
pub struct WindowArgs {
    /// How long results are recorded.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long the load runs before recording starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Processes whose CPU time and peak memory the window is charged with, as NAME=PID.
    #[arg(long = "pid")]
    pub pids: Vec<Watched>,
    /// Where the data lives, for the result (`SQLite`, `PostgreSQL`).
    #[arg(long, default_value = "")]
    pub backend: String,
    /// A JSON-lines file the result is appended to.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// The round this window belongs to, for a scenario measured in rounds (0: not).
    #[arg(long, default_value_t = 0)]
    pub round: u32,
}

#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl FromStr for Watched {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not NAME=PID"))?;
        let pid = pid.parse().map_err(|_| format!("{pid:?} is not a process id"))?;
        Ok(Self {
            name: name.to_owned(),
            pid,
        })
    }
}

/// CPU seconds a process has used so far, user plus system, all threads.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/stat")))?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces, so fields are counted from the last `)`: utime and stime are fields
/// 14 and 15 of the line, the 12th and 13th after the name.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resets the process's peak resident set to its current size (`clear_refs` value 5, Linux
/// 4.0+), so that the peak read afterwards belongs to this scenario, not to an earlier one
/// served by the same process.
pub fn reset_peak_rss(pid: u32) -> io::Result<()> {
    fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// Peak resident set (`VmHWM`) in MiB.
pub fn peak_rss_mib(pid: u32) -> io::Result<f64> {
    status_kib(pid, "VmHWM:").map(|kib| kib as f64 / 1024.0)
}

fn status_kib(pid: u32, key: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))
}

/// CPU used by a set of processes between two points in time, and their peaks in between.
pub struct Window {
    watched: Vec<Watched>,
    cpu_at_start: f64,
}

impl Window {
    /// Starts the window: the processes' CPU so far, and their peaks reset.
    pub fn start(watched: &[Watched]) -> io::Result<Self> {
        for process in watched {
            reset_peak_rss(process.pid)?;
        }
        Ok(Self {
            watched: watched.to_vec(),
            cpu_at_start: total_cpu_seconds(watched)?,
        })
    }

    /// Ends the window: CPU seconds used in it (all processes together), and each process's
    /// peak resident set in MiB.
    pub fn end(self) -> io::Result<(f64, BTreeMap<String, f64>)> {
        let cpu = total_cpu_seconds(&self.watched)? - self.cpu_at_start;
        let mut peaks = BTreeMap::new();
        for process in &self.watched {
            peaks.insert(process.name.clone(), peak_rss_mib(process.pid)?);
        }
        Ok((cpu, peaks))
    }
}

fn total_cpu_seconds(watched: &[Watched]) -> io::Result<f64> {
    watched.iter().map(|process| cpu_seconds(process.pid)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_from_after_the_command_name() {
        // A name with a space and a parenthesis, as a thread may call itself.
        let stat = "4242 (tokio rt) x) S 1 4242 4242 0 -1 4194560 1203 0 0 0 37 15 0 0 20 0 9 0 123 0 0";
        assert_eq!(cpu_ticks(stat), Some(52));
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_peak() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).expect("own stat") >= 0.0);
        assert!(peak_rss_mib(pid).expect("own status") > 0.0);
    }

    #[test]
    fn watched_parses_name_equals_pid() {
        let watched: Watched = "order=17".parse().expect("valid");
        assert_eq!((watched.name.as_str(), watched.pid), ("order", 17));
        assert!("order".parse::<Watched>().is_err());
    }
}
