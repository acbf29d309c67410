//! The C API through a real C (and C++) compiler: `include/rtrace.h` and
//! `rtrace.hpp` compile against the built `librtrace`, misuse is reported
//! once per kind while the program runs on, and the stream stays valid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rtrace_core::{EventReader, Kind};

/// The directory holding a fresh `librtrace.so`: this test's profile
/// directory, after `cargo build -p rtrace-capi` (cargo does not build a
/// package's cdylib for its integration tests).
fn lib_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().unwrap().parent().unwrap().to_owned();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "rtrace-capi"]);
            if dir.file_name().is_some_and(|d| d == "release") {
                build.arg("--release");
            }
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                build.arg("--locked");
            }
            let status = build.current_dir(repo()).status().unwrap();
            assert!(status.success(), "cargo build -p rtrace-capi failed");
            assert!(
                dir.join("librtrace.so").exists(),
                "no librtrace.so in {}",
                dir.display()
            );
            dir
        })
        .clone()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Compiles `source` with `compiler` against the header and the shared
/// library; returns the executable.
fn compile(compiler: &str, source: &Path, out: &Path) -> PathBuf {
    let lib = lib_dir();
    let status = Command::new(compiler)
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(repo().join("include"))
        .arg(source)
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lrtrace", "-lpthread"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        status.success(),
        "{compiler} failed on {}",
        source.display()
    );
    out.to_owned()
}

/// Reads a stream file: the events' (tid, kind, name), checking nesting.
fn read_stream(path: &Path) -> Vec<(u64, Kind, String)> {
    let mut reader = EventReader::open(path).unwrap();
    let mut out = Vec::new();
    while let Some(e) = reader.next_event().unwrap() {
        let name = reader.function(e.function).unwrap().name.clone();
        out.push((e.tid, e.kind, name));
    }
    assert!(reader.end().is_some(), "stream has no end marker");
    let mut stacks: HashMap<u64, Vec<String>> = HashMap::new();
    for (tid, kind, name) in &out {
        let stack = stacks.entry(*tid).or_default();
        match kind {
            Kind::SpanBegin => stack.push(name.clone()),
            Kind::SpanEnd => assert_eq!(stack.pop().as_ref(), Some(name)),
            _ => {}
        }
    }
    assert!(stacks.values().all(Vec::is_empty), "{stacks:?}");
    out
}

#[test]
fn misuse_is_reported_once_and_the_program_and_its_stream_survive() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(
        "gcc",
        &repo().join("capi/tests/abuse.c"),
        &dir.path().join("abuse"),
    );
    let output = Command::new(&exe)
        .env_remove("RTRACE_COLLECTOR")
        .env("RTRACE_OUTPUT_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\n{stderr}",
        output.status
    );
    assert_eq!(stdout.trim(), "survived");

    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with("rtrace: ")), "{stderr}");
    for needle in [
        "called while not recording",
        "got NULL",
        // Said in the C API's words, not the Rust library's.
        "already recording session \"abuse\"",
        "call rtrace_shutdown() first",
        "without a matching begin()",
        "not valid UTF-8",
        "is not a flow token",
        "needs a buffer of RTRACE_FLOW_TOKEN_SIZE (56) bytes, got 10",
    ] {
        let hits = lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(hits, 1, "{needle:?} reported {hits} times:\n{stderr}");
    }

    let path = dir
        .path()
        .join(format!("rtrace-abuse-{}.rtrace", output_pid(&dir)));
    let events = read_stream(&path);
    let names: Vec<&str> = events.iter().map(|(_, _, n)| n.as_str()).collect();
    assert!(names.contains(&"(null)"), "{names:?}");
    assert!(names.contains(&"\u{FFFD}\u{FFFD} bad utf-8"), "{names:?}");
    assert!(names.contains(&"worker span never ended"));
    assert!(names.contains(&"open at shutdown"));
    assert!(!names.contains(&"before init"));
    let kinds = |k: Kind| events.iter().filter(|(_, kind, _)| *kind == k).count();
    assert_eq!(
        (
            kinds(Kind::FlowOut),
            kinds(Kind::FlowIn),
            kinds(Kind::Counter)
        ),
        (1, 1, 1)
    );
}

/// The pid in the one stream file the program left in `dir`.
fn output_pid(dir: &tempfile::TempDir) -> String {
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("rtrace-abuse-") && n.ends_with(".rtrace"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0]["rtrace-abuse-".len()..files[0].len() - ".rtrace".len()].to_owned()
}

#[test]
fn the_cpp_wrapper_scopes_spans() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("scoped.cpp");
    std::fs::write(
        &source,
        r#"
#include <cstdio>
#include "rtrace.hpp"
int main() {
    rtrace::Session session("cpp", nullptr);
    if (!session.ok()) return 1;
    rtrace::thread_name("cpp-main");
    {
        rtrace::Span outer("outer");
        rtrace::Span inner(std::string("inner"));
        rtrace::counter("n", 2);
        std::string token = rtrace::flow_out();
        if (token.size() != 55) return 2;
        rtrace::flow_in(token);
    }
    rtrace::instant("after");
    return 0;
}
"#,
    )
    .unwrap();
    let exe = compile("g++", &source, &dir.path().join("scoped"));
    let output = Command::new(&exe)
        .env_remove("RTRACE_COLLECTOR")
        .env("RTRACE_OUTPUT_DIR", dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "rtrace"))
        .unwrap();
    let events = read_stream(&file);
    let shape: Vec<String> = events
        .iter()
        .map(|(_, k, n)| format!("{} {n}", k.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            "span_begin outer",
            "span_begin inner",
            "counter n",
            "flow_out send",
            "flow_in receive",
            "span_end inner",
            "span_end outer",
            "instant after",
        ]
    );
}
