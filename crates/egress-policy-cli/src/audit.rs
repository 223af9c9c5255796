//! `egress-policy audit`: reads the JSON log and answers the source documents' question, "was
//! any unauthorized request sent?", as one command, with counts per source, destination and
//! decision.
//!
//! A violation is an `error` entry (a rule that marks forbidden access) whose request was let
//! through: its `decision` field (`policy.decision`, if the configuration logs it) is an outcome
//! that forwards the request (`allow` or `dry_run_deny`, [`Outcome::forwarded`]), or, without
//! that field, its `responseCode` is below 400.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::Value;

use egress_policy_core::decision::Outcome;

use crate::load::read;
use crate::{EXIT_DENIED, EXIT_INVALID};

#[derive(clap::Args)]
pub struct Args {
    /// JSON log files ('-' or none: standard input), in the order they were written (a rotated
    /// file before the one that replaced it).
    #[arg(value_name = "LOGFILE")]
    logs: Vec<String>,
    /// Verify the logs' hash chains and signed checkpoints instead: exit 0 when every stream
    /// verifies, 1 naming the stream and sequence where one does not.
    #[arg(long, requires = "public_keys", conflicts_with = "baseline")]
    verify: bool,
    /// A public key (PEM) the checkpoints may be signed with; repeatable (keys being rotated).
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<String>,
    /// With --verify: the report of an earlier `audit --verify --json` of this log; every
    /// stream's last checkpoint in it must still be there (nothing cut from the end, no stream
    /// dropped).
    #[arg(long = "kept-checkpoints", value_name = "REPORT", requires = "verify")]
    kept_checkpoints: Option<String>,
    /// A log of before, repeatable: report what the LOGFILEs hold that these do not (new
    /// source and destination pairs, denied sources, first contacts). Exits 0 whatever it finds.
    #[arg(long = "baseline", value_name = "OLD_LOG")]
    baseline: Vec<String>,
    /// With --baseline or --verify: print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> ExitCode {
    let stdin = ["-".to_owned()];
    let files = if args.logs.is_empty() {
        &stdin[..]
    } else {
        &args.logs[..]
    };
    if args.verify {
        return crate::verify::run(
            files,
            &args.public_keys,
            args.kept_checkpoints.as_deref(),
            args.json,
        );
    }
    if !args.public_keys.is_empty() {
        eprintln!("egress-policy: --public-key is for --verify");
        return ExitCode::from(EXIT_INVALID);
    }
    if !args.baseline.is_empty() {
        return crate::baseline::run(&args.baseline, files, args.json);
    }
    if args.json {
        eprintln!("egress-policy: --json is for --baseline or --verify");
        return ExitCode::from(EXIT_INVALID);
    }
    let mut report = Report::default();
    for file in files {
        match read(file) {
            Ok(content) => report.add(if file == "-" { "stdin" } else { file }, &content),
            Err(e) => report.unreadable.push(format!("{file}: cannot read: {e}")),
        }
    }
    print!("{}", report.render());
    for problem in &report.unreadable {
        eprintln!("egress-policy: {problem}");
    }
    if !report.violations.is_empty() {
        ExitCode::from(EXIT_DENIED)
    } else if report.is_incomplete() {
        eprintln!("egress-policy: some input could not be read, so the audit is incomplete");
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    }
}

/// What the audit found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub entries: usize,
    pub by_level: BTreeMap<String, usize>,
    pub by_source: BTreeMap<String, usize>,
    pub by_destination: BTreeMap<String, usize>,
    pub by_decision: BTreeMap<String, usize>,
    /// Entries by the `policyVersion` that decided them (`none` for lines written before
    /// lines carried it).
    pub by_version: BTreeMap<String, usize>,
    /// Signed checkpoint lines (not entries: `audit --verify` reads them).
    pub checkpoints: usize,
    /// `file:line: what` for each error entry that was let through.
    pub violations: Vec<String>,
    /// `file: why` for each file that could not be read, `file:line: why` for each line that is
    /// not a log entry.
    pub unreadable: Vec<String>,
}

pub fn text<'a>(entry: &'a Value, field: &str) -> Option<&'a str> {
    entry.get(field).and_then(Value::as_str)
}

impl Report {
    /// Some input could not be read: nothing may be concluded of what it held.
    pub fn is_incomplete(&self) -> bool {
        !self.unreadable.is_empty()
    }

    /// Adds the lines of one file (named `origin` in messages).
    pub fn add(&mut self, origin: &str, content: &str) {
        for (number, line) in content.lines().enumerate() {
            let at = format!("{origin}:{}", number + 1);
            if line.trim().is_empty() {
                continue;
            }
            let entry: Value = match serde_json::from_str(line) {
                Ok(entry @ Value::Object(_)) => entry,
                Ok(_) => {
                    self.unreadable.push(format!("{at}: not a JSON object"));
                    continue;
                }
                Err(e) => {
                    self.unreadable.push(format!("{at}: not JSON: {e}"));
                    continue;
                }
            };
            let Some(level) = text(&entry, "level") else {
                self.unreadable
                    .push(format!("{at}: no \"level\": not an egress-policy entry"));
                continue;
            };
            if entry.get("checkpoint").is_some() {
                self.checkpoints += 1;
                continue;
            }
            self.entries += 1;
            *self
                .by_version
                .entry(text(&entry, "policyVersion").unwrap_or("none").to_owned())
                .or_default() += 1;
            *self.by_level.entry(level.to_owned()).or_default() += 1;
            let source = format!(
                "{} ({})",
                text(&entry, "source").unwrap_or("unknown"),
                text(&entry, "sourceNamespace").unwrap_or("unknown")
            );
            *self.by_source.entry(source.clone()).or_default() += 1;
            let destination = text(&entry, "destination").unwrap_or("unknown").to_owned();
            *self.by_destination.entry(destination.clone()).or_default() += 1;
            let code = entry.get("responseCode").and_then(Value::as_i64);
            let decision = match (text(&entry, "decision"), code) {
                (Some(decision), _) => decision.to_owned(),
                (None, Some(code)) if code < 400 => "let through (responseCode < 400)".to_owned(),
                (None, Some(code)) => format!("refused ({code})"),
                (None, None) => "unknown".to_owned(),
            };
            *self.by_decision.entry(decision).or_default() += 1;
            let let_through = match text(&entry, "decision") {
                Some(decision) => match Outcome::parse(decision) {
                    Some(outcome) => outcome.forwarded(),
                    None => {
                        self.unreadable.push(format!(
                            "{at}: decision \"{decision}\" is none of {}",
                            Outcome::ALL.map(Outcome::as_str).join(", ")
                        ));
                        code.is_none_or(|c| c < 400)
                    }
                },
                None => code.is_some_and(|c| c < 400),
            };
            if level == "error" && let_through {
                self.violations.push(format!(
                    "{at}: error entry let through: {destination}{} from {source}, responseCode {}",
                    text(&entry, "path").unwrap_or(""),
                    code.map_or("unknown".into(), |c| c.to_string())
                ));
            }
        }
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut out = format!("entries: {}\n", self.entries);
        if self.checkpoints > 0 {
            out.push_str(&format!(
                "checkpoints: {} (check them with audit --verify)\n",
                self.checkpoints
            ));
        }
        for (title, counts) in [
            ("by level", &self.by_level),
            ("by source (namespace)", &self.by_source),
            ("by destination", &self.by_destination),
            ("by decision", &self.by_decision),
            ("by policy version", &self.by_version),
        ] {
            out.push_str(title);
            out.push_str(":\n");
            for (key, count) in counts {
                out.push_str(&format!("  {count:>8}  {key}\n"));
            }
        }
        if self.is_incomplete() {
            // Said first and in capitals: a script reading standard output must not take the
            // counts below for the whole log.
            out.insert_str(
                0,
                &format!(
                    "AUDIT INCOMPLETE: {} input(s) could not be read (see standard error); nothing is known of what they held\n",
                    self.unreadable.len()
                ),
            );
        }
        if self.violations.is_empty() {
            if self.is_incomplete() {
                out.push_str("AUDIT INCOMPLETE: no violation among the entries that could be read; the rest is unknown\n");
            } else {
                out.push_str("no unauthorized request was let through\n");
            }
        } else {
            out.push_str(&format!(
                "UNAUTHORIZED REQUESTS LET THROUGH: {}\n",
                self.violations.len()
            ));
            for violation in &self.violations {
                out.push_str(&format!("  {violation}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLITICS_LET_THROUGH: &str = r#"{"level":"error","instance":"egress-access","destination":"edition.cnn.com","path":"/politics","responseCode":200,"responseSize":10,"source":"sleep","sourceNamespace":"default","user":"unknown"}
{"level":"info","instance":"egress-access","destination":"edition.cnn.com","path":"/politics","responseCode":200,"responseSize":10,"source":"sleep","sourceNamespace":"default","user":"unknown"}
{"level":"info","instance":"egress-access","destination":"edition.cnn.com","path":"/sport","responseCode":200,"responseSize":10,"source":"sleep","sourceNamespace":"default","user":"unknown"}
"#;

    #[test]
    fn logging_only_policy_let_politics_through() {
        let mut report = Report::default();
        report.add("logging-only.log", POLITICS_LET_THROUGH);
        assert_eq!(report.entries, 3);
        assert_eq!(report.violations.len(), 1);
        assert!(report.violations[0].starts_with(
            "logging-only.log:1: error entry let through: edition.cnn.com/politics from sleep (default)"
        ));
        assert_eq!(report.by_source.get("sleep (default)"), Some(&3));
    }

    #[test]
    fn refused_politics_is_no_violation() {
        let refused = POLITICS_LET_THROUGH.replace(
            "\"responseCode\":200,\"responseSize\":10",
            "\"responseCode\":404,\"responseSize\":0",
        );
        let mut report = Report::default();
        report.add("list-check.log", &refused);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert!(
            report
                .render()
                .contains("no unauthorized request was let through")
        );
        assert_eq!(report.by_decision.get("refused (404)"), Some(&3));
    }

    #[test]
    fn the_decision_field_wins_over_the_response_code() {
        let mut report = Report::default();
        report.add(
            "x",
            r#"{"level":"error","decision":"deny","responseCode":200}"#,
        );
        report.add(
            "y",
            r#"{"level":"error","decision":"dry_run_deny","responseCode":404}"#,
        );
        assert_eq!(report.violations.len(), 1);
        assert!(report.violations[0].starts_with("y:1:"));
    }

    #[test]
    fn unreadable_lines_are_reported_by_position() {
        let mut report = Report::default();
        report.add(
            "bad.log",
            "{\"level\":\"info\"}\nnot json\n[1]\n{\"no\":\"level\"}\n\n",
        );
        assert_eq!(report.entries, 1);
        let at: Vec<&str> = report
            .unreadable
            .iter()
            .map(|u| u.split(": ").next().unwrap())
            .collect();
        assert_eq!(at, ["bad.log:2", "bad.log:3", "bad.log:4"]);
    }
}
