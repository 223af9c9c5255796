//! The `egress-policy` command (package `egress-policy-cli`), found where cargo put it.
//!
//! A test of another package cannot ask cargo for it (`CARGO_BIN_EXE_*` names only the tested
//! package's binaries), so it is looked up beside the test executable, and refused when any
//! source it is built from is newer: a stale CLI would test yesterday's code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use crate::repo;

/// `$EGRESS_POLICY_CLI`, else `target/<profile>/egress-policy` of the running test's profile.
pub fn path() -> PathBuf {
    if let Some(path) = std::env::var_os("EGRESS_POLICY_CLI") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>: the CLI is in target/<profile>.
    let profile_dir = exe
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "deps"))
        .and_then(Path::parent)
        .unwrap_or_else(|| exe.parent().unwrap());
    let cli = profile_dir.join("egress-policy");
    let built = std::fs::metadata(&cli)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "no CLI at {}: run `cargo build -p egress-policy-cli` (scripts/test does)",
                cli.display()
            )
        });
    let sources = [
        "crates/egress-policy-cli",
        "crates/egress-policy-core/src",
        "src",
    ];
    if let Some(newer) = sources
        .iter()
        .filter_map(|dir| newest(&repo().join(dir)))
        .find(|(modified, _)| *modified > built)
    {
        panic!(
            "the CLI at {} is older than {}: run `cargo build -p egress-policy-cli` (scripts/test does)",
            cli.display(),
            newer.1.display()
        );
    }
    cli
}

/// The newest file under `dir`, with its modification time.
fn newest(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut found: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().ok()?.modified().ok().map(|m| (m, path))
        };
        if let Some(candidate) = candidate
            && found.as_ref().is_none_or(|(m, _)| candidate.0 > *m)
        {
            found = Some(candidate);
        }
    }
    found
}

/// The CLI as a command, run in the repository.
pub fn command() -> Command {
    let mut command = Command::new(path());
    command.current_dir(repo());
    command
}

/// The CLI's output for `args`.
pub fn run(args: &[&str]) -> Output {
    command().args(args).output().unwrap()
}

/// The CLI with `input` on its standard input.
pub fn run_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
