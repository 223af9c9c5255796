//! The test kit's Envoy harness as a command, for `scripts/bench`:
//!
//!   envoy-harness --config PATH --dir DIR [--concurrency N] [--cpu N] [--log-level LEVEL]
//!                 [--flush-ms N]
//!
//! Starts Envoy exactly as the integration tests do, waits for `/ready`, prints one JSON line
//! (`pid`, `admin`, `ready_seconds`, `ports` by listener name), and keeps Envoy running until
//! its standard input closes, when it stops it. Exits 1 when Envoy does not start or exits on
//! its own (its stderr is in DIR/envoy.stderr), 2 on a usage error.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use egress_policy_testkit::envoy::{Envoy, Options};

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
        Err(usage) => {
            eprintln!("envoy-harness: {usage}");
            ExitCode::from(2)
        }
        Ok((config, dir, options)) => match run(&config, &dir, &options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("envoy-harness: {why}");
                ExitCode::from(1)
            }
        },
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<(PathBuf, PathBuf, Options), String> {
    let (mut config, mut dir) = (None, None);
    let mut options = Options {
        concurrency: 1,
        component_log_level: None,
        log_level: "error".into(),
        file_flush_millis: 1000,
        ..Options::default()
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<u32>()
                .map_err(|_| format!("{flag}: not a number: {text}"))
        };
        match flag.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--concurrency" => options.concurrency = number(value()?)?,
            "--cpu" => options.cpu = Some(number(value()?)?),
            "--log-level" => options.log_level = value()?,
            "--flush-ms" => options.file_flush_millis = number(value()?)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((
        config.ok_or("--config is required")?,
        dir.ok_or("--dir is required")?,
        options,
    ))
}

fn run(config: &std::path::Path, dir: &std::path::Path, options: &Options) -> Result<(), String> {
    let mut envoy = Envoy::start(dir, config, options)?;
    let ready = serde_json::json!({
        "pid": envoy.process.0.id(),
        "admin": envoy.admin_port,
        "ready_seconds": envoy.ready_after.as_secs_f64(),
        "ports": envoy.listener_ports()?,
    });
    println!("{ready}");
    // Standard input closing (the caller is done, or died) stops Envoy.
    let (closed, stdin_closed) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = closed.send(());
    });
    loop {
        match stdin_closed.recv_timeout(Duration::from_millis(100)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Ok(Some(status)) = envoy.process.0.try_wait() {
            return Err(format!(
                "Envoy exited ({status}): {}",
                std::fs::read_to_string(&envoy.stderr).unwrap_or_default()
            ));
        }
    }
}
