//! The `rtrace-collect` command line (also run by the `rtrace-collect`
//! console script of the Python package).

use std::path::PathBuf;
use std::time::Duration;

use crate::access::{self, Access};
use crate::profile::{self, SortBy};
use crate::status::{regular_file_size, Progress, ProgressLine};
use crate::stop::Stop;
use crate::{live, offline, output, priority, relay, report};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rtrace::clocksync::SyncConfig;
use rtrace::merge::MergeConfig;
use rtrace::{Address, Token};

#[derive(Parser)]
#[command(
    name = "rtrace-collect",
    version,
    about = "Merge the streams of many recorded processes into one timeline",
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  rtrace-collect --listen unix:///tmp/rtrace.sock -o timeline.pftrace\n  \
                  RTRACE_TOKEN=secret rtrace-collect --listen tcp://0.0.0.0:9876 -o t.json\n  \
                  rtrace-collect --listen unix:///tmp/rtrace.sock --forward tcp://central:9876\n  \
                  rtrace-collect merge rtrace-*.rtrace -o timeline.pftrace\n  \
                  rtrace-collect stats rtrace-*.rtrace\n  \
                  rtrace-collect stats --functions --top 10 timeline.pftrace"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Accept streams here: unix:///path/to.sock or tcp://host:port (repeatable;
    /// port 0: any free port, printed once listening). A socket nobody
    /// listens on is replaced; anything else at the path is an error.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// The merged timeline: .pftrace (Perfetto, default) or .json (Chrome trace).
    /// Written as it goes, at most a second behind the merge: a .pftrace can
    /// be read or viewed while the collector runs. Created (or truncated)
    /// only once every address listens: a collector that fails to start
    /// leaves an existing file alone.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    merge: MergeArgs,
    /// Seconds open streams may keep sending after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    drain: f64,
    /// Nice value the threads that carry events (the merge, each stream's
    /// reader and the Perfetto file's writer) take once they fall behind (a
    /// stream's socket full for 5 ms) or more streams are open than CPUs,
    /// until no stream is open: they keep up when busy programs saturate
    /// the CPUs, and leave the programs alone otherwise (needs CAP_SYS_NICE
    /// or `ulimit -e`; a note says when it is not allowed); 0 leaves
    /// priorities alone.
    #[arg(long, default_value_t = priority::DEFAULT_NICE, value_name = "N",
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: i32,
    #[command(flatten)]
    relay: RelayArgs,
    #[command(flatten)]
    access: AccessArgs,
}

/// Who may connect (see README, Security).
#[derive(clap::Args, Clone)]
struct AccessArgs {
    /// Shared token that TCP connections must send (recorders send
    /// $RTRACE_TOKEN; a relay sends it to the --forward collector too);
    /// prefer the environment variable, which `ps` does not show.
    #[arg(
        long,
        env = "RTRACE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Accept TCP streams without a token; allowed on loopback addresses
    /// only, and not beside a token (--token or RTRACE_TOKEN).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Connections open at once; more are refused at once.
    #[arg(long, default_value_t = access::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    max_connections: usize,
    /// Streams accepted in this run; more are refused.
    #[arg(long, default_value_t = access::DEFAULT_MAX_STREAMS, value_name = "N")]
    max_streams: u64,
    /// Seconds a new connection has to send its hello.
    #[arg(long, default_value_t = access::DEFAULT_HELLO_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
    hello_timeout: f64,
}

impl AccessArgs {
    fn access(&self) -> Result<Access> {
        let token = match &self.token {
            Some(t) => Some(Token::new(t.as_str()).ok_or_else(|| {
                anyhow::anyhow!("--token (or RTRACE_TOKEN) is empty; give a non-empty token")
            })?),
            None => None,
        };
        if token.is_some() && self.insecure_no_auth {
            // The token would apply, and a recorder without it be refused:
            // not what `--insecure-no-auth` asks for.
            bail!(
                "--insecure-no-auth and a token (--token or RTRACE_TOKEN) contradict each other: \
                 with a token every TCP stream must send it; drop --insecure-no-auth, or the \
                 token (unset RTRACE_TOKEN) to accept streams without one on loopback"
            );
        }
        let hello_timeout = seconds("--hello-timeout", self.hello_timeout)?;
        if hello_timeout.is_zero() {
            bail!("--hello-timeout must be above 0 seconds");
        }
        Ok(Access {
            token,
            insecure_no_auth: self.insecure_no_auth,
            max_connections: self.max_connections,
            max_streams: self.max_streams,
            hello_timeout,
        })
    }
}

/// Relay mode (see `relay`).
#[derive(clap::Args, Clone)]
struct RelayArgs {
    /// Relay mode: forward every stream to the collector at ADDR
    /// (tcp://host:port or unix:///path), with clocks translated, instead of
    /// writing a timeline.
    #[arg(long, value_name = "ADDR", conflicts_with = "output")]
    forward: Option<String>,
    /// Relay mode: where spill files go while the central collector is
    /// unreachable (created if missing; the relay does not start if it
    /// cannot write there).
    #[arg(long, value_name = "DIR", default_value = ".", requires = "forward")]
    spill_dir: PathBuf,
    /// Relay mode: seconds between clock exchanges with the central
    /// collector after the burst at connect (0: none).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "2",
        requires = "forward"
    )]
    clock_sync: String,
}

#[derive(clap::Args, Clone)]
struct MergeArgs {
    /// Reorder window in seconds: how late a stream may deliver an event
    /// before it counts as late (it is still written). Streams of rtrace's
    /// recorders (Python and native, either on_full policy) need none: they
    /// say on each flush tick what they have sent in full, and are written
    /// at once. The window is for streams that make no such promise (older
    /// recorders, programs using the core library's Recorder without a
    /// flush tick) and for a tick that cannot promise (its queue full).
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    window: f64,
}

/// Options of the per-function report (`rtrace stats` takes the same).
#[derive(clap::Args, Clone)]
struct FunctionArgs {
    /// Per process and function: calls, total, self and mean time.
    #[arg(long)]
    functions: bool,
    /// With --functions: the N first functions of each process (0: all).
    #[arg(long, default_value_t = 20, value_name = "N")]
    top: usize,
    /// With --functions: order by self, total, calls or mean time.
    #[arg(long, default_value = "self", value_name = "KEY")]
    sort: SortBy,
    /// With --functions: JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Merge stream files written without a collector into one timeline.
    Merge {
        #[arg(required = true, value_name = "IN")]
        inputs: Vec<PathBuf>,
        /// The merged timeline: .pftrace (Perfetto) or .json (Chrome trace).
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        #[command(flatten)]
        merge: MergeArgs,
    },
    /// Summarise stream files and merged timelines, a row per process:
    /// session, pid, events, lost, clean or truncated; with --functions,
    /// calls and time per function.
    Stats {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        functions: FunctionArgs,
    },
}

/// Runs the command line with `args` (the first is the program name);
/// returns the exit status.
pub fn main_with_args(args: Vec<String>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code() as u8;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("rtrace-collect: error: {error:#}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Some(Command::Merge {
            inputs,
            output,
            merge,
        }) => {
            let format = output::Format::for_path(&output);
            let create = || output::create_apart_from(&output, &inputs, format);
            let mut progress = ProgressLine::stderr(true, "merging");
            let merged = offline::merge_files(&inputs, create, merge_config(&merge)?, |p| {
                progress.update(p)
            })?;
            drop(progress);
            for (_, why) in &merged.skipped {
                eprintln!("rtrace-collect: skipped: {why}");
            }
            eprint!("{}", report::table(&merged.stats, &merged.bytes));
            eprintln!("rtrace-collect: wrote {}", output.display());
            if merged.skipped.is_empty() {
                Ok(0)
            } else {
                eprintln!(
                    "rtrace-collect: {} of {} inputs could not be read and are not in it (see above)",
                    merged.skipped.len(),
                    inputs.len()
                );
                Ok(1)
            }
        }
        Some(Command::Stats { files, functions }) if functions.functions => {
            let mut progress = ProgressLine::stderr(true, "reading");
            let profiles = profile::profile_files_with_progress(&files, |p| progress.update(p))?;
            drop(progress);
            let FunctionArgs { top, sort, .. } = functions;
            if functions.json {
                print!("{}", profile::profile_json(&profiles, sort, top));
            } else {
                print!("{}", profile::profile_table(&profiles, sort, top));
            }
            Ok(0)
        }
        Some(Command::Stats { files, .. }) => stats(&files),
        None => listen(cli),
    }
}

fn listen(cli: Cli) -> Result<u8> {
    if cli.listen.is_empty() {
        bail!("nothing to do: give --listen ADDR and -o FILE, or a subcommand (merge, stats); see --help");
    }
    if let Some(forward) = &cli.relay.forward {
        return relay(&cli, forward);
    }
    let Some(output) = cli.output else {
        bail!("--listen needs -o FILE for the merged timeline, e.g. -o timeline.pftrace");
    };
    let listen = cli
        .listen
        .iter()
        .map(|a| a.parse::<Address>())
        .collect::<Result<Vec<_>, _>>()?;
    let options = live::LiveOptions {
        listen,
        access: cli.access.access()?,
        merge: merge_config(&cli.merge)?,
        drain: seconds("--drain", cli.drain)?,
        status: true,
        nice: cli.nice,
    };
    let stop = Stop::on_signals()?;
    let create = || output::create(&output);
    let collected = live::collect(&options, create, &stop, |listening| {
        eprintln!(
            "rtrace-collect: listening on {}; writing {} (Ctrl-C to finish)",
            joined(listening),
            output.display()
        );
    })?;
    eprint!("{}", report::table(&collected.stats, &collected.bytes));
    report_refusals(collected.refused, collected.broken);
    eprintln!("rtrace-collect: wrote {}", output.display());
    Ok(0)
}

/// `a, b`: the addresses a collector or relay listens on.
fn joined(addresses: &[Address]) -> String {
    let names: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    names.join(", ")
}

/// The counts of connections refused, and closed before their hello.
fn report_refusals(refused: u64, broken: u64) {
    if refused > 0 {
        eprintln!(
            "rtrace-collect: refused {refused} connection(s) (token, limits or protocol version; see above)"
        );
    }
    if broken > 0 {
        eprintln!(
            "rtrace-collect: closed {broken} connection(s) before their hello (not rtrace, broken or silent; see above)"
        );
    }
}

fn relay(cli: &Cli, forward: &str) -> Result<u8> {
    let listen = cli
        .listen
        .iter()
        .map(|a| a.parse::<Address>())
        .collect::<Result<Vec<_>, _>>()?;
    let access = cli.access.access()?;
    let options = relay::RelayOptions {
        listen,
        token: access.token.clone(),
        access,
        forward: forward.parse()?,
        spill_dir: cli.relay.spill_dir.clone(),
        drain: seconds("--drain", cli.drain)?,
        sync: SyncConfig::default()
            .with_interval(&cli.relay.clock_sync)
            .context("--clock-sync")?,
    };
    let stop = Stop::on_signals()?;
    let relayed = relay::relay(&options, &stop, |listening| {
        eprintln!(
            "rtrace-collect: listening on {}; relaying to {} (Ctrl-C to finish)",
            joined(listening),
            options.forward
        );
    })?;
    eprint!("{}", relay::table(&relayed.streams));
    report_refusals(relayed.refused, relayed.broken);
    let lost: Vec<u64> = relayed
        .streams
        .iter()
        .map(|s| s.lost_frames)
        .filter(|&n| n > 0)
        .collect();
    if lost.is_empty() {
        return Ok(0);
    }
    eprintln!(
        "rtrace-collect: lost {} frame(s) of {} stream(s): the central collector was unreachable \
         and their spill files could not be written (see above)",
        lost.iter().sum::<u64>(),
        lost.len()
    );
    Ok(1)
}

fn stats(files: &[PathBuf]) -> Result<u8> {
    let mut summaries = Vec::new();
    let mut failed = false;
    let total = Progress::total_of(files.iter().map(PathBuf::as_path));
    let mut progress = ProgressLine::stderr(true, "reading");
    let mut done = 0;
    for file in files {
        let summary = crate::summarize_file(file, |read| {
            progress.update(Progress {
                read: done + read,
                total,
            })
        });
        match summary {
            Ok(rows) => {
                // A stream's bytes read (a pipe has no size), else the file's.
                let read = rows.iter().find_map(|s| s.bytes);
                done += read.or_else(|| regular_file_size(file)).unwrap_or(0);
                summaries.extend(rows);
            }
            Err(e) => {
                progress.clear();
                let why = crate::offline::input_error(file, format!("{e:#}"));
                eprintln!("rtrace-collect: {why}");
                failed = true;
            }
        }
    }
    drop(progress);
    print!("{}", crate::table(&summaries));
    Ok(if failed { 1 } else { 0 })
}

fn merge_config(args: &MergeArgs) -> Result<MergeConfig> {
    Ok(MergeConfig {
        window: seconds("--window", args.window)?,
        ..MergeConfig::default()
    })
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    if !(value.is_finite() && (0.0..=3600.0).contains(&value)) {
        bail!("{flag} takes seconds between 0 and 3600, not {value}");
    }
    Ok(Duration::from_secs_f64(value))
}
