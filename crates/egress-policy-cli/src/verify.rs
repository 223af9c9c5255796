//! `egress-policy audit --verify --public-key KEY LOG...`: proves that the lines of the logs are
//! those the gateway wrote, in the order it wrote them (README: Security, "Logs as evidence").
//! Exit 0: every stream verifies; 1: a stream breaks, named with the file, line, stream and
//! sequence, or the logs hold no line at all; 2: a key or a file could not be read.

use std::process::ExitCode;

use egress_policy_core::evidence::{PublicKey, Verifier};
use serde_json::json;

use crate::load::read;
use crate::{EXIT_DENIED, EXIT_INVALID};

pub fn run(files: &[String], key_files: &[String], kept: Option<&str>, as_json: bool) -> ExitCode {
    let mut keys = Vec::new();
    for file in key_files {
        match read(file)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|text| PublicKey::from_pem(&text))
        {
            Ok(key) => keys.push(key),
            Err(why) => {
                eprintln!("egress-policy: --public-key {file}: {why}");
                return ExitCode::from(EXIT_INVALID);
            }
        }
    }
    let mut verifier = Verifier::new(keys);
    for file in files {
        let origin = if file == "-" { "stdin" } else { file };
        match read(file) {
            Ok(content) => {
                for (number, line) in content.lines().enumerate() {
                    verifier.line(&format!("{origin}:{}", number + 1), line);
                }
            }
            Err(e) => {
                eprintln!("egress-policy: {file}: cannot read: {e}; nothing is verified");
                return ExitCode::from(EXIT_INVALID);
            }
        }
    }
    if let Some(report) = kept {
        match kept_checkpoints(report) {
            Ok(kept) => {
                for (stream, seq, chain) in kept {
                    verifier.expect_checkpoint(&stream, seq, &chain);
                }
            }
            Err(why) => {
                eprintln!("egress-policy: --kept-checkpoints {report}: {why}");
                return ExitCode::from(EXIT_INVALID);
            }
        }
    }
    if as_json {
        println!("{}", report_json(&verifier));
    } else {
        print!("{}", report(&verifier));
    }
    // An empty log proves nothing: a log emptied on its way must not pass for a verified one.
    if verifier.problems.is_empty() && verifier.lines > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    }
}

/// The verdict first (a script reads the first line), then where each stream breaks, then
/// each stream: what it holds, and the last checkpoint a verifier should keep.
fn report(verifier: &Verifier) -> String {
    let streams = verifier.streams();
    let unvouched: u64 = streams
        .values()
        .filter(|s| !s.broken)
        .map(|s| s.unvouched)
        .sum();
    let mut out = if verifier.lines == 0 {
        "NOTHING VERIFIED: the logs hold no line\n".to_owned()
    } else if verifier.problems.is_empty() {
        "every stream verifies: no line was removed, edited, reordered or inserted\n".to_owned()
    } else {
        let mut out = format!(
            "VERIFICATION FAILED: {} stream(s) break\n",
            verifier.problems.len()
        );
        for problem in &verifier.problems {
            out.push_str(&format!("  {problem}\n"));
        }
        out
    };
    if verifier.envoy_refusals > 0 {
        out.push_str(&format!(
            "{} refusal(s) written by Envoy itself, outside every stream (a connection it closed before any filter ran): not vouched for\n",
            verifier.envoy_refusals
        ));
    }
    if unvouched > 0 {
        out.push_str(&format!(
            "{unvouched} line(s) after the last checkpoints cannot be vouched for yet (the next checkpoint of their stream will)\n"
        ));
    }
    out.push_str(&format!(
        "lines: {}, streams: {}\n",
        verifier.lines,
        streams.len()
    ));
    for (name, stream) in streams {
        let state = if stream.broken { "BROKEN" } else { "verified" };
        out.push_str(&format!(
            "  stream {name}: {state}, seq 0 to {}, {} checkpoint(s)",
            stream.lines().saturating_sub(1),
            stream.checkpoints,
        ));
        if !stream.key_ids.is_empty() {
            let keys: Vec<&str> = stream.key_ids.iter().map(String::as_str).collect();
            out.push_str(&format!(" signed by key {}", keys.join(", ")));
        }
        if stream.unvouched > 0 && !stream.broken {
            out.push_str(&format!(
                ", {} line(s) not vouched for yet",
                stream.unvouched
            ));
        }
        out.push('\n');
        if let Some((seq, chain)) = &stream.last_checkpoint {
            out.push_str(&format!(
                "    last checkpoint: seq {seq} chain {chain} (keep it: a later copy of the log must still hold it)\n"
            ));
        }
    }
    out
}

fn report_json(verifier: &Verifier) -> serde_json::Value {
    let streams: Vec<serde_json::Value> = verifier
        .streams()
        .iter()
        .map(|(name, s)| {
            json!({
                "stream": name,
                "verified": !s.broken,
                "lines": s.lines(),
                "checkpoints": s.checkpoints,
                "unvouched": s.unvouched,
                "keyIds": s.key_ids,
                "lastCheckpoint": s.last_checkpoint.as_ref().map(|(seq, chain)| json!({"seq": seq, "chain": chain})),
            })
        })
        .collect();
    json!({
        "verified": verifier.problems.is_empty() && verifier.lines > 0,
        "lines": verifier.lines,
        "envoyRefusals": verifier.envoy_refusals,
        "streams": streams,
        "problems": verifier.problems,
    })
}

/// Each stream's last checkpoint in an earlier `audit --verify --json` report.
fn kept_checkpoints(file: &str) -> Result<Vec<(String, u64, String)>, String> {
    let text = read(file).map_err(|e| format!("cannot read: {e}"))?;
    let report: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("not an audit --verify --json report: {e}"))?;
    let streams = report
        .get("streams")
        .and_then(serde_json::Value::as_array)
        .ok_or("not an audit --verify --json report: no \"streams\"")?;
    let mut kept = Vec::new();
    for stream in streams {
        let name = stream.get("stream").and_then(serde_json::Value::as_str);
        let checkpoint = stream.get("lastCheckpoint").filter(|c| !c.is_null());
        match (name, checkpoint) {
            (Some(name), Some(checkpoint)) => {
                let seq = checkpoint.get("seq").and_then(serde_json::Value::as_u64);
                let chain = checkpoint.get("chain").and_then(serde_json::Value::as_str);
                let (Some(seq), Some(chain)) = (seq, chain) else {
                    return Err(format!(
                        "stream {name}: lastCheckpoint without seq and chain"
                    ));
                };
                kept.push((name.to_owned(), seq, chain.to_owned()));
            }
            (Some(_), None) => {}
            (None, _) => return Err("a stream without its name".into()),
        }
    }
    Ok(kept)
}
