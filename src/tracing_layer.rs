//! A `tracing` layer (cargo feature `tracing`) that records a program's
//! `tracing` spans and events through the native API:
//!
//! ```no_run
//! # #[cfg(feature = "tracing")] {
//! use tracing_subscriber::prelude::*;
//! rtrace::init("svc-c").unwrap();
//! tracing_subscriber::registry().with(rtrace::tracing_layer::RtraceLayer::new()).init();
//! # }
//! ```
//!
//! Each time a span is entered it begins an rtrace span of the same name,
//! with the span's fields (those given at creation and those recorded
//! later) as arguments; exiting it ends that span. So an async span that is
//! entered at each poll shows as one slice per poll. Events become
//! instants named by their message (else by the event's name), with their
//! other fields, `level` and `target` as arguments. Nothing is recorded
//! while no recording is active.

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::mark::ArgRef;
use crate::native;

/// Records `tracing` spans and events into the active rtrace recording.
#[derive(Debug, Default, Clone, Copy)]
pub struct RtraceLayer {
    _private: (),
}

impl RtraceLayer {
    /// A layer; start the recording with `rtrace::init` (before or after).
    pub fn new() -> RtraceLayer {
        RtraceLayer { _private: () }
    }
}

/// A field value kept with a span until it is entered.
#[derive(Debug, Clone)]
enum Owned {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl Owned {
    fn as_arg(&self) -> ArgRef<'_> {
        match self {
            Owned::Int(v) => ArgRef::Int(*v),
            Owned::Float(v) => ArgRef::Float(*v),
            Owned::Bool(v) => ArgRef::Bool(*v),
            Owned::Str(v) => ArgRef::Str(v),
        }
    }
}

/// Fields of a span or an event.
#[derive(Debug, Default)]
struct Fields {
    message: Option<String>,
    list: Vec<(&'static str, Owned)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Owned) {
        if field.name() == "message" {
            if let Owned::Str(s) = value {
                self.message = Some(s);
                return;
            }
        }
        match self.list.iter_mut().find(|(k, _)| *k == field.name()) {
            Some(slot) => slot.1 = value,
            None => self.list.push((field.name(), value)),
        }
    }

    fn args(&self) -> Vec<(&str, ArgRef<'_>)> {
        self.list.iter().map(|(k, v)| (*k, v.as_arg())).collect()
    }
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Owned::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let v = i64::try_from(value).map_or(Owned::Float(value as f64), Owned::Int);
        self.put(field, v);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Owned::Float(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Owned::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Owned::Str(value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Owned::Str(format!("{value:?}")));
    }
}

impl<S> Layer<S> for RtraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.fields().is_empty() {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<Fields>() {
            Some(fields) => values.record(fields),
            None => {
                let mut fields = Fields::default();
                values.record(&mut fields);
                extensions.insert(fields);
            }
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if !native::is_recording() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let name = span.metadata().name();
        let extensions = span.extensions();
        match extensions.get::<Fields>() {
            Some(fields) => native::begin_with(name, &fields.args()),
            None => native::begin(name),
        };
    }

    fn on_exit(&self, _id: &Id, _ctx: Context<'_, S>) {
        if native::is_recording() {
            let _ = native::end();
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !native::is_recording() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let mut args = fields.args();
        args.push(("level", ArgRef::Str(metadata.level().as_str())));
        args.push(("target", ArgRef::Str(metadata.target())));
        let name = fields.message.as_deref().unwrap_or(metadata.name());
        native::instant_with(name, &args);
    }
}
