//! Runs the README's commands as a user would: every `$ command` in a `console` block, in order,
//! comparing its output with the lines that follow it (`...` matches any remaining lines,
//! `[exit N]` is the expected exit status). `$ scripts/run [ARGS]` (re)starts the gateway with the
//! real script, on free ports and a private run directory that the other commands are pointed at.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{STARTUP_TIMEOUT, TempDir, http_get, repo, wait_until};

struct Step {
    command: String,
    expected: Vec<String>,
    exit: i32,
}

fn console_steps(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_console = line == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_owned(),
                expected: Vec::new(),
                exit: 0,
            });
        } else if let Some(step) = steps.last_mut() {
            match line
                .strip_prefix("[exit ")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                Some(code) => step.exit = code.parse().unwrap(),
                None => step.expected.push(line.to_owned()),
            }
        }
    }
    steps
}

fn output_matches(expected: &[String], actual: &str) -> bool {
    let actual: Vec<&str> = actual.lines().collect();
    match expected.iter().position(|l| l == "...") {
        Some(wildcard) => {
            actual.len() >= wildcard
                && expected[..wildcard]
                    .iter()
                    .zip(&actual)
                    .all(|(e, a)| e == a)
        }
        None => expected.len() == actual.len() && expected.iter().zip(&actual).all(|(e, a)| e == a),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `scripts/run` in its own process group, so that stopping it stops Envoy and the stand-in too.
struct RunningGateway {
    child: Child,
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
    }
}

struct Session {
    run_dir: TempDir,
    http_port: u16,
    mtls_port: u16,
    /// TLS egress listeners: the sidecar leg and passthrough (`--port 10444`, `--port 10445`).
    tls_port: u16,
    passthrough_port: u16,
    /// The forward proxy (`127.0.0.1:3128`).
    proxy_port: u16,
    admin_port: u16,
    gateway: Option<RunningGateway>,
}

impl Session {
    fn start_gateway(&mut self, args: &str) {
        self.gateway = None;
        self.http_port = free_port();
        self.mtls_port = free_port();
        self.tls_port = free_port();
        self.passthrough_port = free_port();
        self.proxy_port = free_port();
        self.admin_port = free_port();
        let log = std::fs::File::create(self.run_dir.path("scripts-run.out")).unwrap();
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!("exec scripts/run {args}"))
            .current_dir(repo())
            .envs(self.environment())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut gateway = RunningGateway { child };
        let admin_port = self.admin_port;
        let out = self.run_dir.path("scripts-run.out");
        // scripts/run checks the installation and the build before it starts Envoy, which takes
        // longer than a bare Envoy start when the other tests load both cores.
        wait_until("scripts/run to serve", 3 * STARTUP_TIMEOUT, || {
            if let Some(status) = gateway.child.try_wait().unwrap() {
                panic!(
                    "scripts/run exited ({status}): {}",
                    std::fs::read_to_string(&out).unwrap_or_default()
                );
            }
            http_get(admin_port, "/ready").is_some_and(|(status, _)| status == 200)
        });
        let banner = std::fs::read_to_string(&out).unwrap();
        assert!(
            banner.contains("curl -s -o /dev/null"),
            "scripts/run prints the commands to try: {banner}"
        );
        assert!(
            banner.contains("JSON log lines:"),
            "scripts/run prints the log path: {banner}"
        );
        self.gateway = Some(gateway);
    }

    /// What `scripts/run` and `scripts/reload` read: this session's ports and run directory.
    fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("EGRESS_HTTP_PORT", self.http_port.to_string()),
            ("EGRESS_MTLS_PORT", self.mtls_port.to_string()),
            ("EGRESS_TLS_PORT", self.tls_port.to_string()),
            ("EGRESS_PASSTHROUGH_PORT", self.passthrough_port.to_string()),
            ("EGRESS_PROXY_PORT", self.proxy_port.to_string()),
            ("EGRESS_ADMIN_PORT", self.admin_port.to_string()),
            ("EGRESS_RUN_DIR", self.run_dir.0.display().to_string()),
        ]
    }

    /// The command as a user would type it, pointed at this session's ports and run directory.
    fn localize(&self, command: &str) -> String {
        command
            .replace("127.0.0.1:10000", &format!("127.0.0.1:{}", self.http_port))
            .replace("127.0.0.1:10443", &format!("127.0.0.1:{}", self.mtls_port))
            .replace("127.0.0.1:3128", &format!("127.0.0.1:{}", self.proxy_port))
            .replace("127.0.0.1:9901", &format!("127.0.0.1:{}", self.admin_port))
            .replace("--port 10444", &format!("--port {}", self.tls_port))
            .replace("--port 10445", &format!("--port {}", self.passthrough_port))
            .replace(".cache/run/", &format!("{}/", self.run_dir.0.display()))
    }
}

fn run(command: &str, environment: &[(&'static str, String)]) -> (i32, String) {
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("{command} 2>&1"))
        .current_dir(repo())
        .envs(environment.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn readme_console_commands_produce_what_the_readme_shows() {
    // The README's tour, then every chapter of the book, in reading order: one session.
    let readme = crate::support::manual_text();
    let steps = console_steps(&readme);
    assert!(steps.len() >= 8, "README console blocks: {}", steps.len());
    let mut session = Session {
        run_dir: TempDir::new("readme"),
        http_port: 0,
        mtls_port: 0,
        tls_port: 0,
        passthrough_port: 0,
        proxy_port: 0,
        admin_port: 0,
        gateway: None,
    };
    for step in &steps {
        if let Some(args) = step
            .command
            .strip_prefix("scripts/run")
            .filter(|a| a.is_empty() || a.starts_with(' '))
        {
            session.start_gateway(args.trim());
            continue;
        }
        let command = session.localize(&step.command);
        // Log files fill asynchronously (Envoy flushes them on a timer): read-only commands are
        // retried until their output appears; commands that send requests run exactly once.
        let read_only = [
            "jq ",
            "tail ",
            "cat ",
            "curl -s 127.0.0.1:9901/",
            "target/release/egress-policy audit ",
        ]
        .iter()
        .any(|p| step.command.starts_with(p));
        let mut last = (0, String::new());
        let matches = |(status, output): &(i32, String)| {
            *status == step.exit && output_matches(&step.expected, output)
        };
        if read_only {
            wait_until(
                &format!("README output of `{}`", step.command),
                Duration::from_secs(15),
                || {
                    last = run(&command, &session.environment());
                    matches(&last)
                },
            );
        } else {
            last = run(&command, &session.environment());
        }
        assert!(
            matches(&last),
            "`{}` exited {} with:\n{}\nREADME shows (exit {}):\n{}",
            step.command,
            last.0,
            last.1,
            step.exit,
            step.expected.join("\n")
        );
    }
}

#[test]
fn readme_shows_the_two_commands_and_ci_runs_the_second() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("```sh\nscripts/run     #"),
        "README command 1"
    );
    assert!(readme.contains("\nscripts/test    #"), "README command 2");
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(ci.contains("exec scripts/test"));
}
