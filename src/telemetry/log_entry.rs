//! Renders the JSON log lines of a request: one per fired rule that logs, in rule order, with the
//! field names of the source documents (`level`, `time`, `instance`, then the configured fields
//! in name order), preceded by the filter's own findings: an `error` entry with `rejected` for a
//! refused path, a `warning` entry with `identityError` for a certificate that gave no identity,
//! a `warning` entry with `wouldDeny` for each failed dry-run check.

use std::fmt::Write;

use crate::core::decision::Decision;
use crate::core::expr::{Env, Value};
use crate::core::policy::Policy;
use crate::core::request::{Request, Response};
use crate::telemetry::time::rfc3339_micros;

/// Whether the request has any entry to write; lets the adapter skip reading the response.
pub fn has_entries(policy: &Policy, decision: &Decision, request: &Request) -> bool {
    entries(policy, decision, request).next().is_some()
}

/// The entries of a request, in order: the filter's own findings (a refused path, a rejected
/// identity), then one per fired rule that logs. Each is a level and an optional extra field.
fn entries<'p>(
    policy: &'p Policy,
    decision: &'p Decision,
    request: &'p Request,
) -> impl Iterator<Item = (&'static str, Option<(&'static str, String)>)> + 'p {
    let rejected = decision
        .rejected
        .map(|problem| ("error", Some(("rejected", problem.describe().to_owned()))));
    let identity = request
        .identity_error
        .as_ref()
        .map(|error| ("warning", Some(("identityError", error.to_string()))));
    let dry_run = decision
        .dry_run
        .iter()
        .map(|reason| ("warning", Some(("wouldDeny", policy.details(reason)))));
    let rules = decision
        .fired
        .iter()
        .filter_map(|&i| policy.rules.get(usize::try_from(i).ok()?))
        .filter_map(|rule| rule.log.map(|level| (level.as_str(), None)));
    rejected
        .into_iter()
        .chain(identity)
        .chain(dry_run)
        .chain(rules)
}

/// The entries, each a JSON object, joined by `\n` (no trailing newline); empty when there are
/// none.
pub fn render(
    policy: &Policy,
    decision: &Decision,
    request: &Request,
    response: &Response,
) -> String {
    let denied_by = match (&decision.rejected, &decision.denied) {
        (Some(problem), _) => Some(Policy::rejection_details(*problem)),
        (None, Some(reason)) => Some(policy.details(reason)),
        (None, None) => None,
    };
    let env = Env {
        request,
        response: Some(response),
        outcome: Some((decision.outcome().as_str(), denied_by.as_deref())),
    };
    let time = request.time_micros.and_then(rfc3339_micros);
    let mut out = String::new();
    for (level, extra) in entries(policy, decision, request) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("{\"level\":");
        push_json_string(&mut out, level);
        if let Some(time) = &time {
            out.push_str(",\"time\":");
            push_json_string(&mut out, time);
        }
        out.push_str(",\"instance\":");
        push_json_string(&mut out, &policy.instance);
        for field in &policy.log_fields {
            out.push(',');
            push_json_string(&mut out, &field.name);
            out.push(':');
            match field.value.eval(&env) {
                Some(Value::Str(s)) => push_json_string(&mut out, s),
                Some(Value::Int(i)) => {
                    let _ = write!(out, "{i}");
                }
                Some(Value::Bool(b)) => out.push_str(if b { "true" } else { "false" }),
                None => out.push_str("null"),
            }
        }
        if let Some((key, value)) = extra {
            out.push(',');
            push_json_string(&mut out, key);
            out.push(':');
            push_json_string(&mut out, &value);
        }
        out.push('}');
    }
    out
}

/// Writes `s` as a JSON string. Control characters, quotes, backslashes and the line separators
/// that some log shippers split on are escaped, so one entry is always one line.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_cannot_break_the_line_or_the_object() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{0}e\u{2028}");
        assert_eq!(out, r#""a\"b\\c\nd\u0000e\u2028""#);
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{0}e\u{2028}");
    }
}
