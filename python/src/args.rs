//! `log_args`: the texts recorded with a call (the reprs of its arguments,
//! `x=1, items=[1, 2]`) and with a return (the repr of the value), made
//! with the recording's bounded repr (`reprlib`) and cut to a few hundred
//! characters.
//!
//! Making them runs Python code (the reprs), during which the interpreter
//! may hand the GIL to another thread, which may even stop the recording.
//! So the hook asks for a text (`Ask`) only after it has let go of its
//! per-thread state and of the session, and takes both up again afterwards
//! (see `hook::answer_call`). The interpreter records nothing while a hook
//! runs, so the reprs' own calls never show up.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::filter::Filters;
use crate::hook::Session;

/// Longest repr of one value, in characters.
const MAX_REPR_CHARS: usize = 120;
/// Longest text of one event, in bytes.
const MAX_TEXT_BYTES: usize = 1000;

const CO_VARARGS: u32 = 0x04;
const CO_VARKEYWORDS: u32 = 0x08;
/// Generators, coroutines, async generators: resumed many times.
const CO_RESUMABLE: u32 = 0x20 | 0x80 | 0x200;

/// A text the hook needs before it can record an event.
pub struct Ask {
    /// The session that asked (the answer is dropped if it has ended).
    pub generation: u32,
    repr: Py<PyAny>,
    resume_opcode: u8,
}

impl Ask {
    /// An ask for `session`, if its filters log arguments.
    pub fn new(session: &Session, filters: &Filters) -> Option<Ask> {
        // SAFETY: hooks run with the GIL held.
        #[allow(unsafe_code)]
        let py = unsafe { Python::assume_gil_acquired() };
        Some(Ask {
            generation: session.generation,
            repr: filters.repr.as_ref()?.clone_ref(py),
            resume_opcode: filters.resume_opcode,
        })
    }

    /// The reprs of the arguments of the function `frame` (NULL: the
    /// running frame) has just entered; `None` when it has none, or when
    /// the frame is a generator or coroutine being resumed rather than
    /// started.
    pub fn call_text(&self, py: Python<'_>, frame: *mut ffi::PyObject) -> Option<String> {
        let frame = if frame.is_null() {
            // SAFETY: GIL held; a borrowed reference to the running frame,
            // or NULL.
            #[allow(unsafe_code)]
            let running = unsafe { ffi::PyEval_GetFrame() };
            running.cast()
        } else {
            frame
        };
        if frame.is_null() {
            return None;
        }
        // SAFETY: a live frame object, borrowed for the duration of the hook.
        #[allow(unsafe_code)]
        let frame = unsafe { Bound::from_borrowed_ptr(py, frame) };
        self.arguments(&frame).ok().flatten()
    }

    fn arguments(&self, frame: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let code = frame.getattr("f_code")?;
        let int = |name: &str| -> PyResult<u32> { code.getattr(name)?.extract() };
        let flags = int("co_flags")?;
        if flags & CO_RESUMABLE != 0 && !self.is_first_entry(frame, &code)? {
            return Ok(None);
        }
        let count = int("co_argcount")?
            + int("co_kwonlyargcount")?
            + u32::from(flags & CO_VARARGS != 0)
            + u32::from(flags & CO_VARKEYWORDS != 0);
        let names = code.getattr("co_varnames")?;
        let names = names.downcast::<PyTuple>()?;
        let locals = frame.getattr("f_locals")?;
        let mut text = String::new();
        for name in names.iter().take(count as usize) {
            let Ok(value) = locals.get_item(&name) else {
                continue;
            };
            if !text.is_empty() {
                text.push_str(", ");
            }
            text.push_str(&name.extract::<String>().unwrap_or_default());
            text.push('=');
            text.push_str(&self.repr(&value));
            if text.len() > MAX_TEXT_BYTES {
                break;
            }
        }
        Ok((!text.is_empty()).then(|| cut_bytes(text)))
    }

    /// True when a resumable frame is at its first `RESUME` (started, not
    /// resumed): only the prologue (cells, `RETURN_GENERATOR`) comes
    /// before it, and every resumption point after it.
    fn is_first_entry(&self, frame: &Bound<'_, PyAny>, code: &Bound<'_, PyAny>) -> PyResult<bool> {
        let lasti: i64 = frame.getattr("f_lasti")?.extract()?;
        let bytes = code.getattr("co_code")?;
        let bytes = bytes.downcast::<PyBytes>()?.as_bytes();
        let first_resume = bytes
            .chunks_exact(2)
            .position(|unit| unit[0] == self.resume_opcode)
            .map_or(i64::MAX, |i| 2 * i as i64);
        Ok(lasti <= first_resume)
    }

    /// The repr of a returned (or yielded) value; `value` is alive for
    /// the duration of the hook.
    pub fn value_text(&self, py: Python<'_>, value: *mut ffi::PyObject) -> Option<String> {
        if value.is_null() {
            return None;
        }
        // SAFETY: a live object borrowed from the interpreter.
        #[allow(unsafe_code)]
        let value = unsafe { Bound::from_borrowed_ptr(py, value) };
        Some(self.repr(&value))
    }

    /// The bounded repr of `value`; a repr that raises is named, not
    /// raised (the error is cleared).
    fn repr(&self, value: &Bound<'_, PyAny>) -> String {
        let py = value.py();
        match self
            .repr
            .bind(py)
            .call1((value,))
            .and_then(|r| r.extract::<String>())
        {
            Ok(text) => cut_chars(text, MAX_REPR_CHARS),
            Err(error) => {
                let kind = error.get_type(py).name().map(|n| n.to_string());
                format!("<repr failed: {}>", kind.unwrap_or_default())
            }
        }
    }
}

/// `text` cut to `max` characters, ending in `…` when cut.
fn cut_chars(text: String, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text[end..].chars().nth(1).is_some() => {
            let mut short = text[..end].to_owned();
            short.push('…');
            short
        }
        _ => text,
    }
}

/// `text` cut to `MAX_TEXT_BYTES` on a character boundary.
fn cut_bytes(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_keep_characters_whole() {
        assert_eq!(cut_chars("abc".into(), 3), "abc");
        assert_eq!(cut_chars("abcd".into(), 3), "ab…");
        assert_eq!(cut_chars("ééééé".into(), 4), "ééé…");
        let long = "é".repeat(MAX_TEXT_BYTES);
        let cut = cut_bytes(long);
        assert!(cut.len() <= MAX_TEXT_BYTES && cut.ends_with('…'));
        assert_eq!(cut_bytes("short".into()), "short");
    }
}
