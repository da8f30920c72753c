//! The controllers the benchmarks run against a test bed, and what the kernel reports of them:
//! memory and CPU time. Starts processes; reads `/proc` (Linux).

use std::{
    ffi::OsStr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A controller binary running against a test bed; killed when dropped.
#[derive(Debug)]
pub struct Controller(Child);

impl Controller {
    /// Runs `argv` (the binary, or a profiler and its arguments before it) with `args`, against
    /// the test bed's `kubeconfig` (never an in-cluster config), logging warnings only, its
    /// output discarded.
    pub fn start<S: AsRef<OsStr>>(
        argv: &[S],
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        kubeconfig: &Path,
    ) -> std::io::Result<Self> {
        let (program, before) = argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("no program to run"))?;
        Command::new(program)
            .args(before)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Self)
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident memory of a process now and at its peak, in MiB (0 when the process is gone).
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user and system) a process has used.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name), in ticks.
    let ticks: u64 = fields
        .get(11..13)
        .map(|t| t.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_a_gone_one_has_none() {
        let (rss, peak) = memory_mib(std::process::id());
        assert!(rss > 0.0 && peak >= rss, "rss {rss}, peak {peak}");
        let mut spin = 0u64;
        let started = std::time::Instant::now();
        while cpu_time(std::process::id()) == Duration::ZERO && started.elapsed() < Duration::from_secs(5) {
            spin = spin.wrapping_add(1);
        }
        assert!(
            cpu_time(std::process::id()) > Duration::ZERO,
            "after {spin} turns"
        );
        assert_eq!(memory_mib(u32::MAX), (0.0, 0.0));
    }

    #[test]
    fn a_controller_runs_until_dropped() {
        let kubeconfig = Path::new("/nonexistent/kubeconfig");
        let sleeper = Controller::start(&["sleep"], ["30"], kubeconfig).expect("sleep starts");
        let pid = sleeper.pid();
        // Until the child has exec'd, /proc shows the environment it forked with: wait for it.
        let passed_on = || {
            std::fs::read(format!("/proc/{pid}/environ"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|v| v == b"KUBECONFIG=/nonexistent/kubeconfig")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !passed_on() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(passed_on(), "the test bed's kubeconfig is passed on");
        drop(sleeper);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "killed and reaped when dropped"
        );
        let none: [&str; 0] = [];
        assert!(Controller::start(&none, none, kubeconfig).is_err());
    }
}
