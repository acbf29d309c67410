//! The `rtrace-collect` binary: all of it lives in the library's `cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    rtrace_collect::heap::tune_for_collecting();
    ExitCode::from(rtrace_collect::cli::main_with_args(
        std::env::args().collect(),
    ))
}
