//! `egress-policy check`: compiles each configuration as the filter would and prints every
//! problem with its field path, and the warnings of valid ones. A manifest file is checked
//! plugin by plugin (every WasmPlugin and TrafficExtension in it).

use std::process::ExitCode;

use crate::EXIT_INVALID;
use crate::load::load_all;

#[derive(clap::Args)]
pub struct Args {
    /// Plugin configurations (JSON, YAML, WasmPlugin or TrafficExtension manifests; '-' is
    /// standard input).
    #[arg(value_name = "CONFIG", required = true)]
    configs: Vec<String>,
}

pub fn run(args: &Args) -> ExitCode {
    let mut all_valid = true;
    for file in &args.configs {
        for found in load_all(file) {
            let name = if found.place.is_empty() {
                file.clone()
            } else {
                format!("{file} ({})", found.place)
            };
            match found.policy {
                Ok(policy) => {
                    println!(
                        "{name}: valid ({} rules, {} lists, {} routes), policyVersion {}",
                        policy.rules.len(),
                        policy.lists.len(),
                        policy.routes.len(),
                        policy.version
                    );
                    for warning in policy.warnings() {
                        eprintln!("{name}: warning: {warning}");
                    }
                }
                Err(errors) => {
                    all_valid = false;
                    for error in &errors.0 {
                        eprintln!("{name}: {error}");
                    }
                }
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}
