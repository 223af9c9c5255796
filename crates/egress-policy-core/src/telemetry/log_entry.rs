//! Renders the JSON log lines of a request: one per fired rule that logs, in rule order, with the
//! field names of the source documents (`level`, `time`, `instance`, then the configured fields
//! in name order), preceded by the filter's own findings: an `error` entry with `rejected` for a
//! refused path, a `warning` entry with `identityError` for a certificate that gave no identity,
//! a `warning` entry with `wouldDeny` for each failed dry-run check.

use std::fmt::Write;

use crate::decision::Decision;
use crate::evidence::{LogChain, Sealing};
use crate::expr::{Env, Value};
use crate::policy::Policy;
use crate::policy::provider::RemoteLists;
use crate::request::{Request, Response};
use crate::telemetry::time::push_time_field;

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
    // The address guard's refusal is always written, whatever the rules log, and is the
    // request's one line: no rule decided it.
    let guarded = decision
        .denied
        .as_ref()
        .filter(|reason| reason.is_address_guard())
        .map(|reason| {
            (
                "error",
                Some(("addressGuard", policy.explain(reason, request))),
            )
        });
    let by_guard = guarded.is_some();
    let rules = decision
        .fired
        .iter()
        .filter(move |_| !by_guard)
        .filter_map(|&i| policy.rules.get(usize::try_from(i).ok()?))
        .filter_map(|rule| rule.log.map(|level| (level.as_str(), None)));
    rejected
        .into_iter()
        .chain(guarded)
        .chain(identity)
        .chain(dry_run)
        .chain(rules)
}

/// The entries, each a JSON object, joined by `\n` (no trailing newline); empty when there are
/// none. Compiles the template first: for one-off renders (the CLI); the filter keeps a
/// [`LogTemplate`] with its configuration.
pub fn render(
    policy: &Policy,
    decision: &Decision,
    request: &Request,
    response: &Response,
) -> String {
    LogTemplate::compile(policy).render(policy, decision, request, response)
}

/// The constant parts of a configuration's log entries, escaped once when it loads: what is
/// left per request is the values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTemplate {
    /// `,"instance":"egress-access"`, `,"policyVersion":"…"` and the checkpoint settings: what
    /// every line and its stream's checkpoints carry.
    pub sealing: Sealing,
    /// `,"destination":` for each of the policy's log fields, in order.
    keys: Vec<String>,
}

impl LogTemplate {
    pub fn compile(policy: &Policy) -> Self {
        let keys = policy
            .log_fields
            .iter()
            .map(|field| {
                let mut key = String::from(",");
                push_json_string(&mut key, &field.name);
                key.push(':');
                key
            })
            .collect();
        LogTemplate {
            sealing: Sealing::new(&policy.instance, &policy.version, policy.checkpoint_every),
            keys,
        }
    }

    /// The entries as the log receives them: rendered, then sealed into this thread's stream
    /// (README: Security, "Logs as evidence"). Every adapter writes these.
    pub fn render_sealed(
        &self,
        policy: &Policy,
        decision: &Decision,
        request: &Request,
        response: &Response,
        lists: &RemoteLists,
    ) -> String {
        crate::evidence::with_thread_chain(request.time_micros, |chain| {
            self.render_with(
                policy,
                decision,
                request,
                response,
                lists.log_fragment(),
                chain,
            )
        })
    }

    /// The entries of [`render`], for the policy this template was compiled from.
    pub fn render(
        &self,
        policy: &Policy,
        decision: &Decision,
        request: &Request,
        response: &Response,
    ) -> String {
        self.render_with(policy, decision, request, response, "", None)
    }

    /// [`Self::render`], every line also carrying `lists` (the remote lists' versions), and
    /// sealed into `chain` as it is written, when one is given.
    fn render_with(
        &self,
        policy: &Policy,
        decision: &Decision,
        request: &Request,
        response: &Response,
        lists: &str,
        mut chain: Option<&mut LogChain>,
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
        // One allocation for the usual entry (a few hundred bytes, and its seal).
        let mut out = String::with_capacity(640);
        for (level, extra) in entries(policy, decision, request) {
            if !out.is_empty() {
                out.push('\n');
            }
            let start = out.len();
            // Levels and the extra fields' keys are ASCII words: nothing to escape.
            out.push_str("{\"level\":\"");
            out.push_str(level);
            out.push('"');
            push_time_field(&mut out, request.time_micros);
            out.push_str(&self.sealing.instance);
            for (field, key) in policy.log_fields.iter().zip(&self.keys) {
                out.push_str(key);
                match field.value.eval(&env) {
                    Some(Value::Str(s)) => push_json_string(&mut out, s),
                    Some(Value::Int(i)) => push_int(&mut out, i),
                    Some(Value::Bool(b)) => out.push_str(if b { "true" } else { "false" }),
                    None => out.push_str("null"),
                }
            }
            // Every connection's line says whether anything went out, whatever the configured
            // fields: `allow` with nothing relayed must read as such.
            if let Some(relayed) = response.relayed {
                out.push_str(if relayed {
                    ",\"relayed\":true"
                } else {
                    ",\"relayed\":false"
                });
            }
            if let Some((key, value)) = extra {
                out.push_str(",\"");
                out.push_str(key);
                out.push_str("\":");
                push_json_string(&mut out, &value);
            }
            out.push_str(&self.sealing.policy_version);
            out.push_str(lists);
            match chain.as_deref_mut() {
                Some(chain) => chain.close_line(&mut out, start),
                None => out.push('}'),
            }
        }
        if let Some(chain) = chain
            && !out.is_empty()
        {
            chain.finish(&mut out, request.time_micros, &self.sealing);
        }
        out
    }
}

/// Writes `s` as a JSON string. Control characters, quotes, backslashes and the line separators
/// that some log shippers split on are escaped, so one entry is always one line. Runs of bytes
/// that need no escape are copied at once: every byte that starts an escape is ASCII or the
/// lead byte of U+2028/U+2029, so each run ends on a character boundary.
pub fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    // Most strings need no escape and are short: one table look per byte says so (a byte below
    // 0x20, or '"', '\\', DEL or 0xE2, U+2028/U+2029's lead byte, needs a look); long ones are
    // checked eight bytes at a time.
    let attention = if bytes.len() < 32 {
        bytes.iter().any(|&b| needs_look(b))
    } else {
        let mut chunks = bytes.chunks_exact(8);
        let mut attention = false;
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            attention |= needs_attention(u64::from_le_bytes(word));
        }
        attention || chunks.remainder().iter().any(|&b| needs_look(b))
    };
    if !attention {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f | 0x7f => "",
            // U+2028 and U+2029: E2 80 A8 and E2 80 A9.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                ""
            }
            _ => continue,
        };
        out.push_str(s.get(run..i).unwrap_or_default());
        if escape.is_empty() {
            let code = if b == 0xe2 {
                if bytes.get(i + 2) == Some(&0xa8) {
                    0x2028
                } else {
                    0x2029
                }
            } else {
                u32::from(b)
            };
            let _ = write!(out, "\\u{code:04x}");
            run = if b == 0xe2 { i + 3 } else { i + 1 };
        } else {
            out.push_str(escape);
            run = i + 1;
        }
    }
    out.push_str(s.get(run..).unwrap_or_default());
    out.push('"');
}

/// Whether a byte starts an escape, or may (0xE2).
fn needs_look(b: u8) -> bool {
    NEEDS_LOOK.get(usize::from(b)) == Some(&true)
}

const NEEDS_LOOK: [bool; 256] =
    byte_table!(|c| c < 0x20 || c == b'"' || c == b'\\' || c == 0x7f || c == 0xe2);

/// Whether any of eight bytes is below 0x20 or one of '"', '\\', 0x7F, 0xE2 (SWAR: a byte's high
/// bit in `x - 0x01…` survives `& !x` exactly when that byte was zero, or below the subtrahend).
fn needs_attention(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    let equal = |c: u8| zero_byte(x ^ (ONES * u64::from(c)));
    (below_space | equal(b'"') | equal(b'\\') | equal(0x7f) | equal(0xe2)) != 0
}

/// Writes an integer in decimal without the formatting machinery (a response code, a size):
/// itoa, whose buffer lives on the stack.
pub fn push_int(out: &mut String, value: i64) {
    out.push_str(itoa::Buffer::new().format(value));
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

    /// Whatever the bytes, the line parses back to the same string, stays one line, and is
    /// what a JSON library would write but for the escapes this adds.
    #[test]
    fn every_string_round_trips_through_json() {
        for sample in [
            "",
            "plain /sport",
            "ünïcödé ✓ 𝄞",
            "\u{2029}x\u{2028}\u{2027}\u{202a}",
            "\u{7f}\u{1f}\u{0}\t\r\n\"\\",
            "ends with e2 \u{2028}",
            "\u{e2}\u{80}",
        ]
        .into_iter()
        // Short strings are scanned byte by byte, long ones eight bytes at a time: both.
        .flat_map(|s| {
            [
                s.to_owned(),
                format!("{}{s}{}", "a".repeat(37), "b".repeat(5)),
            ]
        }) {
            let mut out = String::new();
            push_json_string(&mut out, &sample);
            assert!(!out.contains('\n') && !out.contains('\u{2028}'), "{out}");
            let parsed: String = serde_json::from_str(&out).unwrap();
            assert_eq!(parsed, sample);
        }
    }

    /// The eight-byte check agrees with the byte-by-byte definition, for every byte in every
    /// position.
    #[test]
    fn the_word_check_finds_every_byte_that_needs_a_look() {
        for special in 0..=255u8 {
            let expected = special < 0x20 || matches!(special, b'"' | b'\\' | 0x7f | 0xe2);
            assert_eq!(needs_look(special), expected, "byte {special:#x}");
            for position in 0..8 {
                let mut word = *b"abcdefgh";
                word[position] = special;
                assert_eq!(
                    needs_attention(u64::from_le_bytes(word)),
                    expected,
                    "byte {special:#x} at {position}"
                );
            }
        }
    }

    #[test]
    fn integers_are_written_in_decimal() {
        for value in [0, 7, 10, 404, -1, 150_448, i64::MAX, i64::MIN] {
            let mut out = String::new();
            push_int(&mut out, value);
            assert_eq!(out, value.to_string());
        }
    }
}
