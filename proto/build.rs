// Generates the Rust types for the public wire specification in `spec/`.
fn main() {
    let protos = [
        "spec/refuge.proto",
        "spec/directory.proto",
        "spec/content.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::Config::new()
        .compile_protos(&protos, &["spec"])
        .expect(
            "the .proto files in proto/spec are valid (is protoc installed? run ./scripts/setup)",
        );
}
