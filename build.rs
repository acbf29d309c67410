//! Generates the wire types from `proto/rtrace.proto` (rtrace's own stream
//! protocol) and `proto/perfetto_trace.proto` (the subset of Perfetto's trace
//! format that `export::perfetto` writes) with a pure-Rust protobuf compiler
//! (`protox`), so no system `protoc` is needed.

fn main() {
    let protos = ["proto/rtrace.proto", "proto/perfetto_trace.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"]).expect("the protos compile");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost code generation");
}
