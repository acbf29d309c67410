//! Exposes `cfg(Py_3_12)` and friends for the Python the module is built for.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
