//! Generates the wire types from `proto/rtrace.proto` with a pure-Rust
//! protobuf compiler (`protox`), so no system `protoc` is needed.

fn main() {
    let proto = "proto/rtrace.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"]).expect("proto/rtrace.proto compiles");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost code generation");
}
