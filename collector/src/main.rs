//! The `rtrace-collect` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rtrace-collect",
    version,
    about = "Work with rtrace streams",
    after_help = "Example:\n  rtrace-collect stats rtrace-*.rtrace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise stream files: session, pid, events, lost, clean or truncated.
    Stats {
        /// Stream files written by rtrace.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("rtrace-collect: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Stats { files } => {
            let mut summaries = Vec::new();
            let mut failed = false;
            for file in &files {
                match rtrace_collect::summarize(file) {
                    Ok(s) => summaries.push(s),
                    Err(e) => {
                        eprintln!("rtrace-collect: {}: {e:#}", file.display());
                        failed = true;
                    }
                }
            }
            print!("{}", rtrace_collect::table(&summaries));
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
