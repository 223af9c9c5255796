//! `egress-policy audit --verify --public-key KEY LOG...`: proves that the lines of the logs are
//! those the gateway wrote, in the order it wrote them (README: Security, "Logs as evidence").
//! Exit 0: every stream verifies; 1: a stream breaks, named with the file, line, stream and
//! sequence; 2: a key or a file could not be read.

use std::process::ExitCode;

use egress_policy_core::evidence::{PublicKey, Verifier};
use serde_json::json;

use crate::load::read;
use crate::{EXIT_DENIED, EXIT_INVALID};

pub fn run(files: &[String], key_files: &[String], as_json: bool) -> ExitCode {
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
    if as_json {
        println!("{}", report_json(&verifier));
    } else {
        print!("{}", report(&verifier));
    }
    if verifier.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    }
}

fn report(verifier: &Verifier) -> String {
    let streams = verifier.streams();
    let mut out = format!("lines: {}, streams: {}\n", verifier.lines, streams.len());
    for (name, stream) in streams {
        let state = if stream.broken { "BROKEN" } else { "verified" };
        out.push_str(&format!(
            "  stream {name}: {state}, seq 0 to {}, {} checkpoint(s)",
            stream.lines().saturating_sub(1),
            stream.checkpoints,
        ));
        if !stream.key_ids.is_empty() {
            let keys: Vec<&str> = stream.key_ids.iter().map(String::as_str).collect();
            out.push_str(&format!(" signed by {}", keys.join(", ")));
        }
        out.push('\n');
        if let Some((seq, chain)) = &stream.last_checkpoint {
            out.push_str(&format!(
                "    last checkpoint vouches for seq {seq}, chain {chain} (keep it: a later log must still hold it)\n"
            ));
        }
        if stream.unvouched > 0 && !stream.broken {
            out.push_str(&format!(
                "    {} line(s) after the last checkpoint cannot be vouched for yet (the next checkpoint will)\n",
                stream.unvouched
            ));
        }
    }
    if verifier.lines == 0 {
        out.push_str("NOTHING VERIFIED: the logs hold no line\n");
    } else if verifier.problems.is_empty() {
        let unvouched: u64 = streams.values().map(|s| s.unvouched).sum();
        out.push_str(&format!(
            "every stream verifies: no line was removed, edited, reordered or inserted{}\n",
            if unvouched > 0 {
                format!(" ({unvouched} line(s) after the last checkpoints are not vouched for yet)")
            } else {
                String::new()
            }
        ));
    } else {
        out.push_str(&format!(
            "VERIFICATION FAILED: {} stream(s) break\n",
            verifier.problems.len()
        ));
        for problem in &verifier.problems {
            out.push_str(&format!("  {problem}\n"));
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
        "streams": streams,
        "problems": verifier.problems,
    })
}
