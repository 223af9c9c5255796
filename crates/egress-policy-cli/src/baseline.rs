//! `egress-policy audit --baseline OLD_LOG... NEW_LOG...`: what the new logs hold that the
//! baseline does not, the anomaly view the source documents ask for: (source, destination)
//! pairs never seen, the sources refused and how often, and destinations contacted for the
//! first time. Information, not a verdict: it exits 0 whatever it finds (2 if a file cannot be
//! read).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use egress_policy_core::decision::Outcome;
use serde_json::{Value, json};

use crate::EXIT_INVALID;
use crate::audit::text;
use crate::load::read;

/// One request or connection, from its lines (a request logged by two rules is one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    source: String,
    namespace: String,
    destination: String,
    time: String,
    denied: bool,
}

/// The requests and connections of some logs.
#[derive(Debug, Default)]
struct Traffic {
    seen: Vec<Seen>,
    entries: usize,
}

impl Traffic {
    fn read(files: &[String]) -> Result<Self, String> {
        let mut traffic = Traffic::default();
        let mut requests = BTreeSet::new();
        for file in files {
            let content = read(file).map_err(|e| format!("{file}: cannot read: {e}"))?;
            for line in content.lines() {
                let Ok(entry @ Value::Object(_)) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                // Checkpoints are not traffic; the DNS guard's lines repeat what the
                // request's own line says, without its source.
                if text(&entry, "level").is_none()
                    || entry.get("checkpoint").is_some()
                    || text(&entry, "instance") == Some("egress-dns-guard")
                {
                    continue;
                }
                traffic.entries += 1;
                let field = |name: &str| text(&entry, name).unwrap_or("unknown").to_owned();
                let code = entry.get("responseCode").and_then(Value::as_i64);
                let denied = match text(&entry, "decision").and_then(Outcome::parse) {
                    Some(outcome) => !outcome.forwarded(),
                    None => code.is_some_and(|c| c >= 400),
                };
                let seen = Seen {
                    source: field("source"),
                    namespace: field("sourceNamespace"),
                    destination: field("destination"),
                    time: text(&entry, "time").unwrap_or("").to_owned(),
                    denied,
                };
                // The lines of one request share their stream, time, caller and destination.
                let request = (
                    text(&entry, "stream").unwrap_or("").to_owned(),
                    seen.clone(),
                    text(&entry, "path").unwrap_or("").to_owned(),
                );
                if requests.insert(request) {
                    traffic.seen.push(seen);
                }
            }
        }
        Ok(traffic)
    }
}

pub fn run(baseline: &[String], files: &[String], as_json: bool) -> ExitCode {
    let (old, new) = match (Traffic::read(baseline), Traffic::read(files)) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(why), _) | (_, Err(why)) => {
            eprintln!("egress-policy: {why}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let report = Report::compare(&old, &new);
    if as_json {
        println!("{}", report.json(&old, &new));
    } else {
        print!("{}", report.render(&old, &new));
    }
    ExitCode::SUCCESS
}

/// A source as the reports name it.
fn caller(seen: &Seen) -> String {
    format!("{} ({})", seen.source, seen.namespace)
}

#[derive(Debug, Default)]
struct Report {
    /// (source, destination) → requests, first time.
    new_pairs: BTreeMap<(String, String), (usize, String)>,
    /// source → denied requests and connections.
    denied: BTreeMap<String, usize>,
    /// destination → first time, first source.
    new_destinations: BTreeMap<String, (String, String)>,
}

impl Report {
    fn compare(old: &Traffic, new: &Traffic) -> Self {
        let old_pairs: BTreeSet<(String, String)> = old
            .seen
            .iter()
            .map(|s| (caller(s), s.destination.clone()))
            .collect();
        let old_destinations: BTreeSet<&str> =
            old.seen.iter().map(|s| s.destination.as_str()).collect();
        let mut report = Report::default();
        for seen in &new.seen {
            let pair = (caller(seen), seen.destination.clone());
            if !old_pairs.contains(&pair) {
                let slot = report
                    .new_pairs
                    .entry(pair)
                    .or_insert((0, seen.time.clone()));
                slot.0 += 1;
                if seen.time < slot.1 {
                    slot.1 = seen.time.clone();
                }
            }
            if seen.denied {
                *report.denied.entry(caller(seen)).or_default() += 1;
            }
            if !old_destinations.contains(seen.destination.as_str()) {
                let slot = report
                    .new_destinations
                    .entry(seen.destination.clone())
                    .or_insert((seen.time.clone(), caller(seen)));
                if seen.time < slot.0 {
                    *slot = (seen.time.clone(), caller(seen));
                }
            }
        }
        report
    }

    /// What is new first, then the counts it was drawn from.
    fn render(&self, old: &Traffic, new: &Traffic) -> String {
        let mut out = format!(
            "new (source, destination) pairs: {}\n",
            self.new_pairs.len()
        );
        for ((source, destination), (count, first)) in &self.new_pairs {
            out.push_str(&format!(
                "  {source} -> {destination}  {count} time(s), first {first}\n"
            ));
        }
        out.push_str(&format!(
            "sources with denied requests or connections: {}\n",
            self.denied.len()
        ));
        for (source, count) in &self.denied {
            out.push_str(&format!("  {source}  {count} denied\n"));
        }
        out.push_str(&format!(
            "destinations first contacted: {}\n",
            self.new_destinations.len()
        ));
        for (destination, (first, source)) in &self.new_destinations {
            out.push_str(&format!("  {destination}  first {first} by {source}\n"));
        }
        out.push_str(&format!(
            "baseline: {} entries, {} requests and connections; new: {} entries, {}\n",
            old.entries,
            old.seen.len(),
            new.entries,
            new.seen.len()
        ));
        out
    }

    fn json(&self, old: &Traffic, new: &Traffic) -> Value {
        json!({
            "baseline": {"entries": old.entries, "requests": old.seen.len()},
            "new": {"entries": new.entries, "requests": new.seen.len()},
            "newPairs": self.new_pairs.iter().map(|((source, destination), (count, first))| json!({
                "source": source, "destination": destination, "count": count, "firstTime": first,
            })).collect::<Vec<_>>(),
            "deniedSources": self.denied.iter().map(|(source, count)| json!({
                "source": source, "denied": count,
            })).collect::<Vec<_>>(),
            "newDestinations": self.new_destinations.iter().map(|(destination, (first, source))| json!({
                "destination": destination, "firstTime": first, "firstSource": source,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(lines: &[(&str, &str, &str, &str)]) -> Traffic {
        Traffic {
            seen: lines
                .iter()
                .map(|(source, destination, time, decision)| Seen {
                    source: (*source).into(),
                    namespace: "default".into(),
                    destination: (*destination).into(),
                    time: (*time).into(),
                    denied: *decision == "deny",
                })
                .collect(),
            entries: lines.len(),
        }
    }

    #[test]
    fn application_a_trying_mongo1_is_a_new_pair_and_a_denied_source() {
        let old = traffic(&[
            ("app-a", "api.ibm.com", "t1", "allow"),
            ("app-b", "mongo1.composedb.com", "t2", "allow"),
        ]);
        let new = traffic(&[
            ("app-a", "api.ibm.com", "t3", "allow"),
            ("app-a", "mongo1.composedb.com", "t5", "deny"),
            ("app-a", "mongo1.composedb.com", "t4", "deny"),
            ("app-b", "evil.example", "t6", "allow"),
        ]);
        let report = Report::compare(&old, &new);
        let pairs: Vec<_> = report.new_pairs.keys().cloned().collect();
        assert_eq!(
            pairs,
            [
                (
                    "app-a (default)".to_owned(),
                    "mongo1.composedb.com".to_owned()
                ),
                ("app-b (default)".to_owned(), "evil.example".to_owned())
            ]
        );
        assert_eq!(
            report.new_pairs.values().next().unwrap(),
            &(2, "t4".to_owned())
        );
        assert_eq!(report.denied.get("app-a (default)"), Some(&2));
        assert_eq!(
            report.new_destinations.keys().collect::<Vec<_>>(),
            ["evil.example"]
        );
    }
}
