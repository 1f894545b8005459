//! Compiles `schemas/proto/*.proto` with protox (a Rust protobuf compiler), so building
//! needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../schemas/proto/inventory.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../schemas/proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
