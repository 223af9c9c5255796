//! Logs that stand as evidence: the policy version every line names, and the hash chain with
//! signed checkpoints that lets `egress-policy audit --verify` prove no line was removed, edited,
//! reordered or inserted after the gateway wrote it (README: Security, "Logs as evidence").
//!
//! Each writer of the log (a wasm VM, a native worker thread, the DNS guard) is one **stream**
//! with a random name. Every line it writes ends with its stream, a sequence number counted from
//! 0 and a chain value:
//!
//! ```text
//! {…,"policyVersion":"…","stream":"9f2c…","seq":41,"chain":"<64 hex>"}
//! chain(seq) = BLAKE2b-256(chain(seq - 1) ‖ the line's bytes up to ,"chain":)   chain(-1) = 32 zero bytes
//! ```
//!
//! Every `checkpointLines` lines, or with the first line written `checkpointInterval` after the
//! previous checkpoint, the stream adds a checkpoint line, itself chained, whose `checkpoint`
//! object carries an Ed25519 signature over `egress-policy checkpoint v1 STREAM SEQ CHAIN` (the
//! last line it vouches for), so `openssl pkeyutl -verify` can check it without this program.
//! Editing a line breaks its chain value; recomputing the chain after an edit breaks the next
//! signature. The key is read from the environment, never from the plugin configuration.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::OnceLock;

use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U32;
use ed25519_dalek::Signer as _;

use crate::telemetry::log_entry::{push_int, push_json_string};
use crate::telemetry::time::push_time_field;

/// The environment variable holding the signing key (PEM, PKCS#8, as `openssl genpkey
/// -algorithm ed25519` writes it); Kubernetes fills it from a Secret.
pub const SIGNING_KEY_ENV: &str = "EGRESS_LOG_SIGNING_KEY";
/// The environment variable naming a file that holds the signing key (native build and the DNS
/// guard: a Secret mounted as a volume).
pub const SIGNING_KEY_FILE_ENV: &str = "EGRESS_LOG_SIGNING_KEY_FILE";

/// A chain value.
pub type Chain = [u8; 32];

/// The chain value before a stream's first line.
pub const GENESIS: Chain = [0; 32];

/// What starts the chain value at the end of every sealed line.
pub const CHAIN_FIELD: &str = ",\"chain\":\"";

/// The bytes a sealed line ends with after its chain field: the value's 64 hex digits, `"}`.
pub const CHAIN_SUFFIX_LEN: usize = CHAIN_FIELD.len() + 64 + 2;

/// The next chain value: BLAKE2b-256 over the previous one and the line's bytes up to its
/// chain field.
pub fn chain_step(previous: &Chain, line_body: &[u8]) -> Chain {
    let mut hasher = Blake2b::<U32>::new();
    hasher.update(previous);
    hasher.update(line_body);
    hasher.finalize().into()
}

/// A line as `audit --verify` reads it: the part the chain covers, and the chain value it
/// claims; `None` when it does not end with a chain field.
pub fn split_sealed(line: &str) -> Option<(&str, Chain)> {
    let at = line.len().checked_sub(CHAIN_SUFFIX_LEN)?;
    let body = line.get(..at)?;
    let rest = line.get(at..)?.strip_prefix(CHAIN_FIELD)?;
    let hex = rest.strip_suffix("\"}")?;
    Some((body, parse_hex(hex)?))
}

/// The message a checkpoint signs.
pub fn checkpoint_message(stream: &str, seq: u64, chain: &Chain) -> String {
    format!("egress-policy checkpoint v1 {stream} {seq} {}", hex(chain))
}

/// How often a stream writes a checkpoint (`log.checkpointLines`, `log.checkpointInterval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointEvery {
    pub lines: u64,
    pub micros: i64,
}

impl Default for CheckpointEvery {
    fn default() -> Self {
        CheckpointEvery {
            lines: 1_000,
            micros: 10_000_000,
        }
    }
}

/// This process's signing key (this VM's, in the wasm build), read from the environment once:
/// an error names what is wrong with it, and the filter then refuses its configuration rather
/// than write lines nobody can vouch for while an operator believes they are signed.
pub fn process_signing_key() -> &'static Result<Option<SigningKey>, String> {
    static KEY: OnceLock<Result<Option<SigningKey>, String>> = OnceLock::new();
    KEY.get_or_init(|| {
        signing_key_from(
            |name| std::env::var(name).ok(),
            |path| {
                if cfg!(target_arch = "wasm32") {
                    // A VM has no files; saying so beats an unsigned log nobody meant.
                    return Err(format!(
                        "the wasm build reads no files: give the key itself in {SIGNING_KEY_ENV}"
                    ));
                }
                std::fs::read_to_string(path).map_err(|e| e.to_string())
            },
        )
    })
}

thread_local! {
    /// The stream of this thread: a worker's (native build) or the VM's (wasm, one thread).
    static THREAD_CHAIN: RefCell<Option<LogChain>> = const { RefCell::new(None) };
}

/// Runs `work` with this thread's stream (started on first use, with the process's key);
/// `None` only if `work` is already running on this thread, which nothing does: its lines
/// then go unsealed and fail verification visibly rather than break the chain.
pub fn with_thread_chain<R>(
    now_micros: Option<i64>,
    work: impl FnOnce(Option<&mut LogChain>) -> R,
) -> R {
    THREAD_CHAIN.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return work(None);
        };
        let chain = slot.get_or_insert_with(|| {
            let key = process_signing_key().as_ref().ok().and_then(Option::clone);
            let name = LogChain::random_stream_name()
                .unwrap_or_else(|| format!("t{:x}", now_micros.unwrap_or(0)));
            LogChain::new(name, key)
        });
        work(Some(chain))
    })
}

/// `entries` sealed into this thread's stream.
pub fn seal_on_this_thread(entries: &str, now_micros: Option<i64>, sealing: &Sealing) -> String {
    with_thread_chain(now_micros, |chain| match chain {
        Some(chain) => chain.seal(entries, now_micros, sealing),
        None => entries.to_owned(),
    })
}

/// A signing key, with the id its checkpoints name.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    id: String,
}

impl std::fmt::Debug for SigningKey {
    // Never the key itself: a debug print may end up in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.id)
    }
}

/// PKCS#8 of an Ed25519 private key, before its 32 bytes (RFC 8410).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// SubjectPublicKeyInfo of an Ed25519 public key, before its 32 bytes (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl SigningKey {
    /// Reads a PEM `PRIVATE KEY` (PKCS#8) holding an Ed25519 key.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let der = pem_body(text, "PRIVATE KEY")?;
        let seed: [u8; 32] = der
            .strip_prefix(&PKCS8_PREFIX[..])
            .and_then(|rest| rest.try_into().ok())
            .ok_or("not an Ed25519 private key (expected PKCS#8 as `openssl genpkey -algorithm ed25519` writes it)")?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let id = key_id(&key.verifying_key().to_bytes());
        Ok(SigningKey { key, id })
    }

    /// The key id checkpoints name: the first 16 hex digits of the SHA-256 of the public key's
    /// DER (`openssl pkey -pubin -outform DER | sha256sum`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key, PEM, as `openssl pkey -pubout` writes it.
    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.key.verifying_key().to_bytes());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64(&der)
        )
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// A verifier's public key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    id: String,
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding an Ed25519 key.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let der = pem_body(text, "PUBLIC KEY")?;
        let raw: [u8; 32] = der
            .strip_prefix(&SPKI_PREFIX[..])
            .and_then(|rest| rest.try_into().ok())
            .ok_or("not an Ed25519 public key (expected what `openssl pkey -pubout` writes)")?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map_err(|_| "not a valid Ed25519 public key (not a point of the curve)")?;
        Ok(PublicKey {
            key,
            id: key_id(&raw),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether `signature` (hex, 128 digits) signs `message` with this key. Strict: no
    /// malleable or small-order forms.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Some(bytes) = parse_hex::<64>(signature) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        // Strict: everything `verify` checks, and no small-order key or malleable signature.
        self.key.verify_strict(message, &signature).is_ok()
    }
}

fn key_id(raw_public: &[u8; 32]) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(SPKI_PREFIX);
    hasher.update(raw_public);
    let digest = hasher.finalize();
    hex(digest.get(..8).unwrap_or_default())
}

/// Where a stream's signing key comes from, read once when the stream starts: the key itself
/// in [`SIGNING_KEY_ENV`], else a file named by [`SIGNING_KEY_FILE_ENV`] (when files can be
/// read). `Ok(None)`: no key configured, the stream is chained but unsigned.
pub fn signing_key_from(
    env: impl Fn(&str) -> Option<String>,
    read_file: impl Fn(&str) -> Result<String, String>,
) -> Result<Option<SigningKey>, String> {
    if let Some(text) = env(SIGNING_KEY_ENV).filter(|t| !t.trim().is_empty()) {
        return SigningKey::from_pem(&text)
            .map(Some)
            .map_err(|why| format!("{SIGNING_KEY_ENV}: {why}"));
    }
    if let Some(path) = env(SIGNING_KEY_FILE_ENV).filter(|t| !t.trim().is_empty()) {
        let text =
            read_file(&path).map_err(|why| format!("{SIGNING_KEY_FILE_ENV}={path}: {why}"))?;
        return SigningKey::from_pem(&text)
            .map(Some)
            .map_err(|why| format!("{SIGNING_KEY_FILE_ENV}={path}: {why}"));
    }
    Ok(None)
}

/// What a stream writes besides its lines: the checkpoint line's constant parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealing {
    /// `,"instance":"egress-access"`.
    pub instance: String,
    /// `,"policyVersion":"…"`.
    pub policy_version: String,
    pub every: CheckpointEvery,
}

impl Sealing {
    pub fn new(instance: &str, policy_version: &str, every: CheckpointEvery) -> Self {
        let mut instance_fragment = String::from(",\"instance\":");
        push_json_string(&mut instance_fragment, instance);
        Sealing {
            instance: instance_fragment,
            policy_version: version_fragment(policy_version),
            every,
        }
    }
}

/// `,"policyVersion":"…"`, as every line carries it.
pub fn version_fragment(version: &str) -> String {
    let mut out = String::from(",\"policyVersion\":");
    push_json_string(&mut out, version);
    out
}

/// One stream's chain: what the next line continues from.
#[derive(Debug)]
pub struct LogChain {
    stream: String,
    next_seq: u64,
    head: Chain,
    since_checkpoint: u64,
    /// When the last checkpoint was written (or the stream started).
    last_checkpoint: Option<i64>,
    key: Option<SigningKey>,
}

impl LogChain {
    pub fn new(stream: String, key: Option<SigningKey>) -> Self {
        LogChain {
            stream,
            next_seq: 0,
            head: GENESIS,
            since_checkpoint: 0,
            last_checkpoint: None,
            key,
        }
    }

    /// A stream name no other writer picks: 16 random hex digits (WASI's `random_get` in the
    /// wasm build, the kernel's otherwise); `None` when the host gives no randomness.
    pub fn random_stream_name() -> Option<String> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).ok()?;
        Some(hex(&bytes))
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn is_signed(&self) -> bool {
        self.key.is_some()
    }

    /// `entries` (JSON objects joined by `\n`) with each line sealed into the chain, and a
    /// checkpoint line after them when one is due.
    pub fn seal(&mut self, entries: &str, now_micros: Option<i64>, sealing: &Sealing) -> String {
        let lines = entries.split('\n').filter(|l| !l.is_empty());
        let mut out = String::with_capacity(entries.len() + 128 * 2);
        for line in lines {
            if !out.is_empty() {
                out.push('\n');
            }
            let start = out.len();
            out.push_str(line.strip_suffix('}').unwrap_or(line));
            self.close_line(&mut out, start);
        }
        self.finish(&mut out, now_micros, sealing);
        out
    }

    /// Closes the line that starts at `start` in `out`, an object whose closing brace is still
    /// to come, with the stream, the sequence number and the chain value.
    pub fn close_line(&mut self, out: &mut String, start: usize) {
        out.push_str(",\"stream\":\"");
        out.push_str(&self.stream);
        out.push_str("\",\"seq\":");
        push_int(out, i64::try_from(self.next_seq).unwrap_or(i64::MAX));
        self.head = chain_step(&self.head, out.get(start..).unwrap_or_default().as_bytes());
        out.push_str(CHAIN_FIELD);
        push_hex(out, &self.head);
        out.push_str("\"}");
        self.next_seq += 1;
        self.since_checkpoint += 1;
    }

    /// After the lines of one request or connection: a checkpoint line when one is due.
    pub fn finish(&mut self, out: &mut String, now_micros: Option<i64>, sealing: &Sealing) {
        let now = now_micros.unwrap_or(0);
        let started = *self.last_checkpoint.get_or_insert(now);
        let due = self.since_checkpoint >= sealing.every.lines.max(1)
            || now.saturating_sub(started) >= sealing.every.micros;
        if due && self.since_checkpoint > 0 && self.key.is_some() {
            self.checkpoint(out, now_micros, sealing);
        }
    }

    fn checkpoint(&mut self, out: &mut String, now_micros: Option<i64>, sealing: &Sealing) {
        let Some(key) = &self.key else {
            return;
        };
        let vouched = self.next_seq.saturating_sub(1);
        let message = checkpoint_message(&self.stream, vouched, &self.head);
        let signature = key.sign(message.as_bytes());
        let mut line = String::with_capacity(400);
        line.push_str("{\"level\":\"info\"");
        push_time_field(&mut line, now_micros);
        line.push_str(&sealing.instance);
        line.push_str(",\"checkpoint\":{\"seq\":");
        push_int(&mut line, i64::try_from(vouched).unwrap_or(i64::MAX));
        line.push_str(",\"chain\":\"");
        push_hex(&mut line, &self.head);
        let _ = write!(line, "\",\"keyId\":\"{}\",\"signature\":\"", key.id);
        push_hex(&mut line, &signature);
        line.push_str("\"}");
        line.push_str(&sealing.policy_version);
        if !out.is_empty() {
            out.push('\n');
        }
        let start = out.len();
        out.push_str(&line);
        self.close_line(out, start);
        self.since_checkpoint = 0;
        self.last_checkpoint = now_micros.or(self.last_checkpoint);
    }
}

/// `audit --verify`: follows every stream through the lines in the order given (files in the
/// order they were written: a reopened log continues its streams), and says where the first
/// break of each stream is.
#[derive(Debug, Default)]
pub struct Verifier {
    keys: Vec<PublicKey>,
    streams: BTreeMap<String, StreamState>,
    /// `where: what`, in the order found.
    pub problems: Vec<String>,
    pub lines: u64,
    /// Lines Envoy writes itself when it closes a connection before any filter ran
    /// (`client_hello_unreadable`): outside every stream, so not vouched for; they can only
    /// say that something was refused.
    pub envoy_refusals: u64,
}

/// The instance of the lines Envoy writes into the policy log itself (`envoy/gateway.yaml`).
pub const ENVOY_INSTANCE: &str = "egress-gateway";

/// Whether `line` is one of Envoy's own refusals: a JSON object of instance
/// [`ENVOY_INSTANCE`] that says `"decision":"reject"` and `"relayed":false`, and claims no place
/// in a stream. Anything else without a chain is a line the gateway did not write.
fn is_envoy_refusal(line: &str) -> bool {
    let Ok(serde_json::Value::Object(entry)) = serde_json::from_str::<serde_json::Value>(line)
    else {
        return false;
    };
    let text = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
    text("instance") == Some(ENVOY_INSTANCE)
        && text("decision") == Some("reject")
        && entry.get("relayed") == Some(&serde_json::Value::Bool(false))
        && ["stream", "seq", "chain", "checkpoint"]
            .iter()
            .all(|field| !entry.contains_key(*field))
}

/// What a verifier knows of one stream so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    next_seq: u64,
    head: Chain,
    /// Lines (checkpoints excepted) since the last good checkpoint.
    pub unvouched: u64,
    pub checkpoints: u64,
    /// The last good checkpoint: the seq and chain it vouches for (what a verifier keeps).
    pub last_checkpoint: Option<(u64, String)>,
    pub key_ids: BTreeSet<String>,
    /// Every good checkpoint: the seq it vouches for, and that line's chain value.
    pub vouched: BTreeMap<u64, String>,
    /// Where the stream stopped verifying; nothing after it is checked.
    pub broken: bool,
}

impl StreamState {
    /// The stream's next sequence number: how many lines it has.
    pub fn lines(&self) -> u64 {
        self.next_seq
    }
}

impl Verifier {
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Verifier {
            keys,
            ..Verifier::default()
        }
    }

    pub fn streams(&self) -> &BTreeMap<String, StreamState> {
        &self.streams
    }

    /// Checks one line (`at`: `file:line`, for messages).
    pub fn line(&mut self, at: &str, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        self.lines += 1;
        let Some((body, claimed)) = split_sealed(line) else {
            if is_envoy_refusal(line) {
                self.envoy_refusals += 1;
                return;
            }
            self.problems.push(format!(
                "{at}: not sealed (it does not end with a chain value): a line the gateway did not write, or one cut or edited"
            ));
            return;
        };
        let entry: serde_json::Value = match serde_json::from_str(line) {
            Ok(entry @ serde_json::Value::Object(_)) => entry,
            _ => {
                self.problems
                    .push(format!("{at}: not a JSON object: the line was edited"));
                return;
            }
        };
        let (Some(stream), Some(seq)) = (
            entry.get("stream").and_then(serde_json::Value::as_str),
            entry.get("seq").and_then(serde_json::Value::as_u64),
        ) else {
            self.problems.push(format!(
                "{at}: no \"stream\" and \"seq\": the line was edited"
            ));
            return;
        };
        let state = self
            .streams
            .entry(stream.to_owned())
            .or_insert_with(|| StreamState {
                next_seq: 0,
                head: GENESIS,
                unvouched: 0,
                checkpoints: 0,
                last_checkpoint: None,
                key_ids: BTreeSet::new(),
                vouched: BTreeMap::new(),
                broken: false,
            });
        if state.broken {
            return;
        }
        let problem = if seq != state.next_seq && state.next_seq == 0 && state.head == GENESIS {
            Some(format!(
                "stream {stream} begins at seq {seq}: seq 0 to {} are missing (removed, or in a file not given: give every file of the stream in the order written)",
                seq.saturating_sub(1)
            ))
        } else if seq > state.next_seq {
            Some(format!(
                "stream {stream} seq {seq} follows seq {}: seq {} to {} are missing (removed or moved)",
                state.next_seq.saturating_sub(1),
                state.next_seq,
                seq - 1
            ))
        } else if seq < state.next_seq {
            Some(format!(
                "stream {stream} seq {seq} comes after seq {}: a line inserted, repeated or moved",
                state.next_seq.saturating_sub(1)
            ))
        } else if chain_step(&state.head, body.as_bytes()) != claimed {
            Some(format!(
                "stream {stream} seq {seq}: the chain value does not match the line: it was edited, or made up"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            state.broken = true;
            self.problems.push(format!("{at}: {problem}"));
            return;
        }
        if let Some(checkpoint) = entry.get("checkpoint") {
            match check_checkpoint(&self.keys, stream, seq, &state.head, checkpoint) {
                Ok(key_id) => {
                    state.checkpoints += 1;
                    state.unvouched = 0;
                    let vouched = (seq.saturating_sub(1), hex(&state.head));
                    state.vouched.insert(vouched.0, vouched.1.clone());
                    state.last_checkpoint = Some(vouched);
                    state.key_ids.insert(key_id);
                }
                Err(problem) => {
                    state.broken = true;
                    self.problems.push(format!(
                        "{at}: stream {stream} checkpoint at seq {seq}: {problem}"
                    ));
                    return;
                }
            }
        } else {
            state.unvouched += 1;
        }
        state.head = claimed;
        state.next_seq += 1;
    }
}

impl Verifier {
    /// After the lines: a checkpoint a verifier kept from an earlier copy of the log (stream,
    /// seq, chain) must be among those verified now, or lines were cut from the end of the
    /// stream, or the stream dropped.
    pub fn expect_checkpoint(&mut self, stream: &str, seq: u64, chain: &str) {
        let found = self
            .streams
            .get(stream)
            .and_then(|state| state.vouched.get(&seq));
        let problem = match found {
            Some(seen) if seen.eq_ignore_ascii_case(chain) => return,
            Some(seen) => format!(
                "stream {stream}: the checkpoint kept for seq {seq} vouched for chain {chain}, these logs for {seen}: the stream was rewritten"
            ),
            None if self.streams.contains_key(stream) => format!(
                "stream {stream}: the checkpoint kept for seq {seq} is not in these logs: lines were cut from the stream's end"
            ),
            None => format!(
                "stream {stream}: a checkpoint was kept for it (seq {seq}), but these logs hold none of its lines: the stream was dropped"
            ),
        };
        self.problems.push(problem);
    }
}

/// The key id of a good checkpoint line, or why it is not one.
fn check_checkpoint(
    keys: &[PublicKey],
    stream: &str,
    seq: u64,
    head: &Chain,
    checkpoint: &serde_json::Value,
) -> Result<String, String> {
    let field = |name: &str| checkpoint.get(name).and_then(serde_json::Value::as_str);
    let (Some(signed_seq), Some(chain), Some(key_id), Some(signature)) = (
        checkpoint.get("seq").and_then(serde_json::Value::as_u64),
        field("chain"),
        field("keyId"),
        field("signature"),
    ) else {
        return Err("it lacks seq, chain, keyId or signature".into());
    };
    if seq == 0 || signed_seq != seq - 1 || parse_hex::<32>(chain) != Some(*head) {
        return Err(format!(
            "it vouches for seq {signed_seq} and chain {chain}, not for the line before it"
        ));
    }
    let Some(key) = keys.iter().find(|k| k.id() == key_id) else {
        return Err(format!(
            "signed by key {key_id}, which is none of the public keys given ({})",
            keys.iter()
                .map(PublicKey::id)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let message = checkpoint_message(stream, signed_seq, head);
    if key.verifies(message.as_bytes(), signature) {
        Ok(key_id.to_owned())
    } else {
        Err(format!("the signature does not verify with key {key_id}"))
    }
}

/// The configuration's digest in a canonical form (keys sorted, defaults filled in by the
/// parse), so replicas that loaded the same configuration, however it was spelled, name the
/// same version: the first 16 hex digits of BLAKE2b-256.
pub fn policy_version(config: &serde_json::Value) -> String {
    let mut canonical = String::new();
    write_canonical(&mut canonical, config);
    let digest = Blake2b::<U32>::digest(canonical.as_bytes());
    hex(digest.get(..8).unwrap_or_default())
}

/// A fetched list body's digest (`listVersions`): the first 16 hex digits of BLAKE2b-256.
pub fn content_version(body: &[u8]) -> String {
    hex(Blake2b::<U32>::digest(body).get(..8).unwrap_or_default())
}

fn write_canonical(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, key);
                out.push(':');
                if let Some(value) = map.get(key) {
                    write_canonical(out, value);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::String(s) => push_json_string(out, s),
        other => out.push_str(&other.to_string()),
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    let digit = |n: u8| if n < 10 { b'0' + n } else { b'a' + n - 10 };
    // Through a buffer on the stack: one copy into the string, not a push per digit.
    let mut buffer = [0u8; 128];
    for chunk in bytes.chunks(64) {
        for (pair, &b) in buffer.chunks_exact_mut(2).zip(chunk) {
            if let [high, low] = pair {
                *high = digit(b >> 4);
                *low = digit(b & 0xf);
            }
        }
        let digits = buffer.get(..chunk.len() * 2).unwrap_or_default();
        out.push_str(std::str::from_utf8(digits).unwrap_or_default());
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Exactly `N` bytes of lower- or upper-case hex.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        let (high, low) = (digit(*pair.first()?)?, digit(*pair.get(1)?)?);
        *slot = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

/// The bytes of a PEM block labelled `label`.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no '{begin}' line (expected PEM)"))?;
    let rest = text.get(start + begin.len()..).unwrap_or_default();
    let stop = rest
        .find(&end)
        .ok_or_else(|| format!("no '{end}' line (expected PEM)"))?;
    let body: String = rest
        .get(..stop)
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    unbase64(&body).ok_or_else(|| format!("the {label} block is not base64"))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                out.push(char::from(BASE64.get(index).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=').as_bytes();
    if !text.len().is_multiple_of(4) || text.len() - digits.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in digits {
        let value = BASE64.iter().position(|&d| d == c)?;
        acc = (acc << 6) | u32::try_from(value).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genpkey -algorithm ed25519` output, generated for this test only.
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQJm83R4c7ZT7tgbQyW4Ok1\n-----END PRIVATE KEY-----\n";

    fn sealing() -> Sealing {
        Sealing::new(
            "egress-access",
            "0123456789abcdef",
            CheckpointEvery {
                lines: 3,
                micros: 10_000_000,
            },
        )
    }

    #[test]
    fn base64_round_trips() {
        for sample in [&b""[..], b"a", b"ab", b"abc", b"abcd", &PKCS8_PREFIX] {
            assert_eq!(unbase64(&base64(sample)).unwrap(), sample);
        }
        assert_eq!(unbase64("a==="), None);
        assert_eq!(unbase64("ab!d"), None);
    }

    #[test]
    fn a_key_reads_from_pem_and_its_public_half_reads_back_with_the_same_id() {
        let key = SigningKey::from_pem(TEST_KEY).unwrap();
        let public = PublicKey::from_pem(&key.public_pem()).unwrap();
        assert_eq!(public.id(), key.id());
        let message = b"egress-policy checkpoint v1 s 0 00";
        assert!(public.verifies(message, &hex(&key.sign(message))));
        assert!(!public.verifies(b"another message", &hex(&key.sign(message))));
        assert!(!format!("{key:?}").contains("MC4C"));
    }

    #[test]
    fn keys_that_are_not_ed25519_pem_are_refused_by_name() {
        let errors = [
            SigningKey::from_pem("hello").unwrap_err(),
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----")
                .unwrap_err(),
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----")
                .unwrap_err(),
        ];
        assert!(errors[0].contains("BEGIN PRIVATE KEY"), "{errors:?}");
        assert!(errors[1].contains("not base64"), "{errors:?}");
        assert!(
            errors[2].contains("not an Ed25519 private key"),
            "{errors:?}"
        );
        assert!(
            PublicKey::from_pem(TEST_KEY)
                .unwrap_err()
                .contains("BEGIN PUBLIC KEY")
        );
    }

    #[test]
    fn every_sealed_line_continues_the_chain_and_a_checkpoint_follows_every_third_line() {
        let key = SigningKey::from_pem(TEST_KEY).unwrap();
        let public = PublicKey::from_pem(&key.public_pem()).unwrap();
        let mut chain = LogChain::new("s1".into(), Some(key));
        let first = chain.seal("{\"a\":1}\n{\"a\":2}", Some(0), &sealing());
        let second = chain.seal("{\"a\":3}", Some(1), &sealing());
        let lines: Vec<&str> = first.lines().chain(second.lines()).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        let mut head = GENESIS;
        for (seq, line) in lines.iter().enumerate() {
            let (body, claimed) = split_sealed(line).unwrap();
            head = chain_step(&head, body.as_bytes());
            assert_eq!(head, claimed, "line {seq}");
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["seq"], seq);
            assert_eq!(value["stream"], "s1");
        }
        let checkpoint: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
        let signed = &checkpoint["checkpoint"];
        assert_eq!(signed["seq"], 2);
        let (_, vouched) = split_sealed(lines[2]).unwrap();
        assert_eq!(signed["chain"], hex(&vouched));
        let message = checkpoint_message("s1", 2, &vouched);
        assert!(public.verifies(message.as_bytes(), signed["signature"].as_str().unwrap()));
        assert_eq!(checkpoint["policyVersion"], "0123456789abcdef");
    }

    #[test]
    fn a_checkpoint_follows_the_first_line_written_an_interval_after_the_last() {
        let key = SigningKey::from_pem(TEST_KEY).unwrap();
        let mut chain = LogChain::new("s".into(), Some(key));
        assert_eq!(chain.seal("{}", Some(0), &sealing()).lines().count(), 1);
        assert_eq!(
            chain
                .seal("{}", Some(10_000_000), &sealing())
                .lines()
                .count(),
            2
        );
    }

    #[test]
    fn an_unsigned_stream_is_chained_without_checkpoints() {
        let mut chain = LogChain::new("s".into(), None);
        let out = chain.seal("{}\n{}\n{}\n{}", Some(0), &sealing());
        assert_eq!(out.lines().count(), 4);
        assert!(!out.contains("checkpoint"));
    }

    #[test]
    fn the_policy_version_ignores_key_order() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"a":1,"b":{"c":[1,"x"],"d":null}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"b":{"d":null,"c":[1,"x"]},"a":1}"#).unwrap();
        assert_eq!(policy_version(&a), policy_version(&b));
        assert_eq!(policy_version(&a).len(), 16);
        let c: serde_json::Value = serde_json::from_str(r#"{"a":2}"#).unwrap();
        assert_ne!(policy_version(&a), policy_version(&c));
    }

    #[test]
    fn keys_come_from_the_variable_then_the_file() {
        let none = signing_key_from(|_| None, |_| Err("unused".into())).unwrap();
        assert!(none.is_none());
        let from_env = signing_key_from(
            |name| (name == SIGNING_KEY_ENV).then(|| TEST_KEY.to_owned()),
            |_| Err("unused".into()),
        );
        assert!(from_env.unwrap().is_some());
        let missing = signing_key_from(
            |name| (name == SIGNING_KEY_FILE_ENV).then(|| "/nope".to_owned()),
            |_| Err("No such file".into()),
        )
        .unwrap_err();
        assert_eq!(missing, "EGRESS_LOG_SIGNING_KEY_FILE=/nope: No such file");
        let bad = signing_key_from(
            |n| (n == SIGNING_KEY_ENV).then(|| "x".into()),
            |_| Err(String::new()),
        )
        .unwrap_err();
        assert!(
            bad.starts_with("EGRESS_LOG_SIGNING_KEY: no '-----BEGIN"),
            "{bad}"
        );
    }

    /// Eight lines of one stream with a checkpoint after every third line.
    fn sealed_log() -> (Vec<String>, PublicKey) {
        let key = SigningKey::from_pem(TEST_KEY).unwrap();
        let public = PublicKey::from_pem(&key.public_pem()).unwrap();
        let mut chain = LogChain::new("s1".into(), Some(key));
        let mut lines = Vec::new();
        for i in 0..6 {
            let out = chain.seal(
                &format!("{{\"level\":\"info\",\"n\":{i}}}"),
                Some(i),
                &sealing(),
            );
            lines.extend(out.lines().map(str::to_owned));
        }
        (lines, public)
    }

    fn verify(lines: &[String], public: &PublicKey) -> Verifier {
        let mut verifier = Verifier::new(vec![public.clone()]);
        for (i, line) in lines.iter().enumerate() {
            verifier.line(&format!("log:{}", i + 1), line);
        }
        verifier
    }

    #[test]
    fn an_untouched_log_verifies_and_counts_what_its_last_checkpoint_leaves_out() {
        let (lines, public) = sealed_log();
        assert_eq!(lines.len(), 8, "{lines:#?}");
        let verifier = verify(&lines, &public);
        assert!(verifier.problems.is_empty(), "{:?}", verifier.problems);
        let stream = &verifier.streams()["s1"];
        assert_eq!(stream.checkpoints, 2);
        assert_eq!(stream.unvouched, 0);
        assert_eq!(stream.last_checkpoint.as_ref().unwrap().0, 6);
        let verifier = verify(&lines[..7], &public);
        assert_eq!(verifier.streams()["s1"].unvouched, 3);
        let verifier = verify(&lines[..6], &public);
        assert_eq!(verifier.streams()["s1"].unvouched, 2);
    }

    #[test]
    fn removing_editing_moving_or_inserting_any_line_is_found_and_named() {
        let (lines, public) = sealed_log();
        for at in 0..lines.len() {
            let mut removed = lines.clone();
            removed.remove(at);
            let mut edited = lines.clone();
            edited[at] = edited[at].replacen("\"level\":\"info\"", "\"level\":\"infO\"", 1);
            let mut inserted = lines.clone();
            inserted.insert(at, lines[at].clone());
            let mut cases = vec![("edited", edited), ("inserted", inserted)];
            // The last line's removal leaves a consistent shorter log: only a later checkpoint,
            // or one the verifier kept, can tell (README: Security).
            if at + 1 < lines.len() {
                cases.push(("removed", removed));
                let mut swapped = lines.clone();
                swapped.swap(at, at + 1);
                cases.push(("swapped", swapped));
            }
            for (what, log) in cases {
                let verifier = verify(&log, &public);
                assert!(
                    !verifier.problems.is_empty(),
                    "{what} line {at} went unnoticed"
                );
                assert!(
                    verifier.problems[0].contains("stream s1"),
                    "{what} {at}: {:?}",
                    verifier.problems
                );
            }
        }
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_or_forged_fails() {
        let (lines, _) = sealed_log();
        let other = SigningKey::from_pem(
            &TEST_KEY.replace("MC4CAQAwBQYDK2VwBCIEIJ+D", "MC4CAQAwBQYDK2VwBCIEIJ+E"),
        )
        .unwrap();
        let other_public = PublicKey::from_pem(&other.public_pem()).unwrap();
        let verifier = verify(&lines, &other_public);
        assert!(
            verifier.problems[0].contains("none of the public keys given"),
            "{:?}",
            verifier.problems
        );
        // A chain recomputed after an edit, with the signature left as it was.
        let (mut lines, public) = sealed_log();
        let mut head = GENESIS;
        for line in lines.iter_mut() {
            let (body, _) = split_sealed(line).unwrap();
            let body = body.replacen("\"n\":1,", "\"n\":9,", 1);
            head = chain_step(&head, body.as_bytes());
            *line = format!("{body}{CHAIN_FIELD}{}\"}}", hex(&head));
        }
        let verifier = verify(&lines, &public);
        assert!(
            verifier.problems[0].contains("checkpoint at seq 3"),
            "{:?}",
            verifier.problems
        );
    }

    #[test]
    fn envoys_own_refusals_are_counted_apart_and_nothing_else_passes_unsealed() {
        let (lines, public) = sealed_log();
        let envoy = r#"{"level":"error","instance":"egress-gateway","decision":"reject","relayed":false,"policyVersion":"none"}"#;
        let mut log = lines.clone();
        log.insert(2, envoy.to_owned());
        let verifier = verify(&log, &public);
        assert!(verifier.problems.is_empty(), "{:?}", verifier.problems);
        assert_eq!(verifier.envoy_refusals, 1);
        for forged in [
            envoy.replace("reject", "allow"),
            envoy.replace("false", "true"),
            envoy.replace("egress-gateway", "egress-access"),
        ] {
            let mut log = lines.clone();
            log.insert(2, forged.clone());
            assert!(!verify(&log, &public).problems.is_empty(), "{forged}");
        }
    }

    #[test]
    fn a_kept_checkpoint_catches_a_cut_end_and_a_dropped_stream() {
        let (lines, public) = sealed_log();
        let whole = verify(&lines, &public);
        let (seq, chain) = whole.streams()["s1"].last_checkpoint.clone().unwrap();
        let mut again = verify(&lines, &public);
        again.expect_checkpoint("s1", seq, &chain);
        assert!(again.problems.is_empty(), "{:?}", again.problems);
        // Cut after the first checkpoint: consistent, but the kept one is gone.
        let mut cut = verify(&lines[..4], &public);
        assert!(cut.problems.is_empty());
        cut.expect_checkpoint("s1", seq, &chain);
        assert!(
            cut.problems[0].contains("cut from the stream's end"),
            "{:?}",
            cut.problems
        );
        let mut dropped = verify(&[], &public);
        dropped.expect_checkpoint("s1", seq, &chain);
        assert!(
            dropped.problems[0].contains("dropped"),
            "{:?}",
            dropped.problems
        );
    }
}
