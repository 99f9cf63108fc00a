//! `shovel`: TPC-DS q80 on Shovel's engine (`shovel q80 --sf 1`) and data
//! generation (`shovel gen --sf 1 --out DIR`). See `shovel --help`; the
//! implementation lives in `engine::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    engine::cli::main_with_args(&args)
}
