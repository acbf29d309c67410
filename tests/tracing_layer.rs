//! A program instrumented only with `tracing` macros records its spans
//! (nested, with their fields) and events through `RtraceLayer`.

use std::collections::HashMap;

use rtrace::tracing_layer::RtraceLayer;
use rtrace::{ArgValue, EventReader, Kind};
use tracing::{info, info_span, instrument, warn};
use tracing_subscriber::prelude::*;

#[instrument]
fn handle(user: u64, path: &str) -> usize {
    let parsed = parse(path);
    info!(user, "handled");
    parsed
}

#[instrument(skip(path), fields(len = path.len()))]
fn parse(path: &str) -> usize {
    warn!(cache = "miss", hit = false, ratio = 0.5);
    path.split('/').count()
}

fn program() {
    for user in 0..3 {
        let span = info_span!("request", user, status = tracing::field::Empty);
        let _enter = span.enter();
        handle(user, "/items/7");
        span.record("status", 200);
    }
}

#[test]
fn tracing_spans_and_events_land_in_the_stream_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracing.rtrace");
    let subscriber = tracing_subscriber::registry().with(RtraceLayer::new());
    let _default = tracing::subscriber::set_default(subscriber);
    rtrace::native::Options::new()
        .session("tracing-test")
        .output(&path)
        .start()
        .unwrap();
    program();
    let stats = rtrace::shutdown().unwrap();
    assert_eq!(stats.lost, 0);

    let mut reader = EventReader::open(&path).unwrap();
    let mut events = Vec::new();
    while let Some(e) = reader.next_event().unwrap() {
        events.push(e);
    }
    let name = |e: &rtrace::Event| reader.function(e.function).unwrap().name.clone();
    let shape: Vec<String> = events
        .iter()
        .take(8)
        .map(|e| format!("{} {}", e.kind.as_str(), name(e)))
        .collect();
    assert_eq!(
        shape,
        [
            "span_begin request",
            "span_begin handle",
            "span_begin parse",
            "instant event tests/tracing_layer.rs:20",
            "span_end parse",
            "instant handled",
            "span_end handle",
            "span_end request",
        ]
    );
    assert_eq!(events.len(), 3 * 8);
    let args = |i: usize| -> HashMap<String, ArgValue> {
        events[i]
            .mark
            .as_ref()
            .unwrap()
            .args
            .iter()
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect()
    };
    assert_eq!(args(0)["user"], ArgValue::Int(0));
    assert_eq!(args(1)["path"], ArgValue::Str("/items/7".into()));
    assert_eq!(args(2)["len"], ArgValue::Int(8));
    assert_eq!(args(3)["cache"], ArgValue::Str("miss".into()));
    assert_eq!(args(3)["hit"], ArgValue::Bool(false));
    assert_eq!(args(3)["ratio"], ArgValue::Float(0.5));
    assert_eq!(args(3)["level"], ArgValue::Str("WARN".into()));
    assert_eq!(args(5)["user"], ArgValue::Int(0));
    // Each request span has its own fields; `status`, recorded after the
    // span was entered, is not on this entry's begin.
    assert_eq!(args(16)["user"], ArgValue::Int(2));
    assert!(!args(16).contains_key("status"));
    assert!(events
        .iter()
        .all(|e| e.kind != Kind::SpanEnd || e.mark.is_none()));
}
