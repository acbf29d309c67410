//! The `rtrace-collect` binary: all of it lives in the library's `cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(rtrace_collect::cli::main_with_args(
        std::env::args().collect(),
    ))
}
