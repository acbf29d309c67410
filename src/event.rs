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
}

impl Kind {
    /// Number of low bits of an event code that hold the kind.
    pub const BITS: u32 = 4;
    const MASK: u64 = (1 << Self::BITS) - 1;

    /// The kind's name as the Python API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Return => "return",
            Kind::Exception => "exception",
            Kind::CCall => "c_call",
            Kind::CReturn => "c_return",
            Kind::Line => "line",
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
            _ => return None,
        })
    }

    /// True for kinds that open a slice.
    pub fn opens(self) -> bool {
        matches!(self, Kind::Call | Kind::CCall)
    }

    /// True for kinds that close the slice opened last.
    pub fn closes(self) -> bool {
        matches!(self, Kind::Return | Kind::Exception | Kind::CReturn)
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
    /// Line number for `Kind::Line`, else 0.
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
