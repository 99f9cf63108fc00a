//! `shovel`: TPC-DS q80 on Shovel's engine (`shovel q80 --sf 1`) and data
//! generation (`shovel gen --sf 1 --out DIR`). See `shovel --help`; the
//! implementation lives in `engine::cli`.
//!
//! Logs: `RUST_LOG` takes comma-separated `target=level` and `level`
//! directives (`RUST_LOG=engine=debug`, `RUST_LOG=shuffle_s3=trace,warn`),
//! read by `tracing-subscriber`'s `Targets` filter; logs go to stderr.
//! Without it (or when it does not parse) only warnings are printed.

use std::process::ExitCode;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::WARN));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .init();
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    engine::cli::main_with_args(&args)
}
