//! Events as the recorder stores them: fixed-size, no pointers.

/// Identifies an interned function within one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionId(pub u32);

/// What happened. The numeric values are the wire's `Kind` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A Python function started or resumed.
    Call = 1,
    /// A Python function returned or yielded.
    Return = 2,
    /// A Python function was left by an exception.
    Exception = 3,
    /// A C function was called.
    CCall = 4,
    /// A C function returned or raised.
    CReturn = 5,
    /// A line is about to run.
    Line = 6,
    /// A user span began (`rtrace.span`); closed by the next `SpanEnd`.
    SpanBegin = 7,
    /// The innermost open user span ended.
    SpanEnd = 8,
    /// A user instant (`rtrace.instant`).
    Instant = 9,
    /// A counter's new value (`rtrace.counter`).
    Counter = 10,
    /// A message left with a flow token (`rtrace.flow_out`).
    FlowOut = 11,
    /// A message with a flow token arrived (`rtrace.flow_in`).
    FlowIn = 12,
}

impl Kind {
    /// Number of low bits of an event code that hold the kind.
    pub const BITS: u32 = 4;
    pub(crate) const MASK: u64 = (1 << Self::BITS) - 1;
    /// The user events (`is_mark`) as a set of raw kinds, bit `kind` each:
    /// SpanBegin to FlowIn, the last kind.
    pub(crate) const MARKS: u64 = (1 << (Kind::FlowIn as u64 + 1)) - (1 << Kind::SpanBegin as u64);

    /// The kind's name as the Python API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Return => "return",
            Kind::Exception => "exception",
            Kind::CCall => "c_call",
            Kind::CReturn => "c_return",
            Kind::Line => "line",
            Kind::SpanBegin => "span_begin",
            Kind::SpanEnd => "span_end",
            Kind::Instant => "instant",
            Kind::Counter => "counter",
            Kind::FlowOut => "flow_out",
            Kind::FlowIn => "flow_in",
        }
    }

    /// Parses a wire value; `None` for values this version does not know.
    pub fn from_wire(value: u64) -> Option<Kind> {
        Some(match value {
            1 => Kind::Call,
            2 => Kind::Return,
            3 => Kind::Exception,
            4 => Kind::CCall,
            5 => Kind::CReturn,
            6 => Kind::Line,
            7 => Kind::SpanBegin,
            8 => Kind::SpanEnd,
            9 => Kind::Instant,
            10 => Kind::Counter,
            11 => Kind::FlowOut,
            12 => Kind::FlowIn,
            _ => return None,
        })
    }

    /// True for kinds that open a slice.
    pub fn opens(self) -> bool {
        matches!(self, Kind::Call | Kind::CCall | Kind::SpanBegin)
    }

    /// True for kinds that close the slice opened last.
    pub fn closes(self) -> bool {
        matches!(
            self,
            Kind::Return | Kind::Exception | Kind::CReturn | Kind::SpanEnd
        )
    }

    /// True for user events (`mark`), as opposed to the calls and lines
    /// the hook records.
    pub fn is_mark(self) -> bool {
        Kind::MARKS & (1 << self as u64) != 0
    }

    /// True for kinds that carry a `mark::Mark` (flow id, value, args);
    /// in a buffer, the event's `line` counts its payload slots.
    pub fn has_payload(self) -> bool {
        self.is_mark() && self != Kind::SpanEnd
    }
}

/// Packs a function id and a kind into the code stored per event.
#[inline]
pub fn encode_code(function: FunctionId, kind: Kind) -> u64 {
    (u64::from(function.0) << Kind::BITS) | kind as u64
}

/// Splits an event code into function id and raw kind value.
#[inline]
pub fn decode_code(code: u64) -> (u64, u64) {
    (code >> Kind::BITS, code & Kind::MASK)
}

/// One recorded event: 16 bytes, written by the hook with one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct RawEvent {
    /// Raw counter value (see `clock`).
    pub ticks: u64,
    /// Function id and kind (`encode_code`).
    pub code: u32,
    /// Line number for `Kind::Line`; for marks (`Kind::has_payload`), the
    /// number of payload slots that follow; else 0.
    pub line: u32,
}

impl RawEvent {
    /// An event for `function` of `kind` at `ticks`.
    #[inline]
    pub fn new(ticks: u64, function: FunctionId, kind: Kind, line: u32) -> RawEvent {
        RawEvent {
            ticks,
            code: (function.0 << Kind::BITS) | kind as u32,
            line,
        }
    }

    /// The kind, if valid.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_wire(u64::from(self.code) & Kind::MASK)
    }

    /// The function id.
    pub fn function(&self) -> FunctionId {
        FunctionId(self.code >> Kind::BITS)
    }
}

/// Largest function id that fits in a `RawEvent` code.
pub const MAX_FUNCTION_ID: u32 = u32::MAX >> Kind::BITS;
