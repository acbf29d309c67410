//! Conversions into `ArgRef` and the `span!` / `instant!` macros, so that
//! arguments read as `key = value`.

use crate::mark::ArgRef;

macro_rules! int_args {
    ($($t:ty),*) => {$(
        impl From<$t> for ArgRef<'_> {
            #[inline]
            fn from(v: $t) -> Self {
                ArgRef::Int(i64::from(v))
            }
        }
    )*};
}
int_args!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for ArgRef<'_> {
    /// Values above `i64::MAX` become floats.
    #[inline]
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or(ArgRef::Float(v as f64), ArgRef::Int)
    }
}

impl From<usize> for ArgRef<'_> {
    #[inline]
    fn from(v: usize) -> Self {
        ArgRef::from(v as u64)
    }
}

impl From<f32> for ArgRef<'_> {
    #[inline]
    fn from(v: f32) -> Self {
        ArgRef::Float(f64::from(v))
    }
}

impl From<f64> for ArgRef<'_> {
    #[inline]
    fn from(v: f64) -> Self {
        ArgRef::Float(v)
    }
}

impl From<bool> for ArgRef<'_> {
    #[inline]
    fn from(v: bool) -> Self {
        ArgRef::Bool(v)
    }
}

impl<'a> From<&'a str> for ArgRef<'a> {
    #[inline]
    fn from(v: &'a str) -> Self {
        ArgRef::Str(v)
    }
}

impl<'a> From<&'a String> for ArgRef<'a> {
    #[inline]
    fn from(v: &'a String) -> Self {
        ArgRef::Str(v)
    }
}

/// A span guard with arguments:
/// `let _s = rtrace::span!("handle", user = 42, path = "/items");`
#[macro_export]
macro_rules! span {
    ($name:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::native::span_with(
            $name,
            &[$((stringify!($key), $crate::ArgRef::from($value))),*],
        )
    };
}

/// An instant with arguments: `rtrace::instant!("cache miss", key = 7);`
#[macro_export]
macro_rules! instant {
    ($name:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::native::instant_with(
            $name,
            &[$((stringify!($key), $crate::ArgRef::from($value))),*],
        )
    };
}
