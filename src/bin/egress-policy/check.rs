//! `egress-policy check`: compiles each configuration as the filter would and prints every
//! problem with its field path, and the warnings of valid ones.

use std::process::ExitCode;

use crate::EXIT_INVALID;
use crate::load::load;

#[derive(clap::Args)]
pub struct Args {
    /// Plugin configurations (JSON, YAML, WasmPlugin manifests; '-' is standard input).
    #[arg(value_name = "CONFIG", required = true)]
    configs: Vec<String>,
}

pub fn run(args: &Args) -> ExitCode {
    let mut all_valid = true;
    for file in &args.configs {
        match load(file) {
            Ok(policy) => {
                println!(
                    "{file}: valid ({} rules, {} lists, {} routes)",
                    policy.rules.len(),
                    policy.lists.len(),
                    policy.routes.len()
                );
                for warning in policy.warnings() {
                    eprintln!("{file}: warning: {warning}");
                }
            }
            Err(errors) => {
                all_valid = false;
                for error in &errors.0 {
                    eprintln!("{file}: {error}");
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
