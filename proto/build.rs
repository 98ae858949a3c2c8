//! Compiles the .proto files with protox (pure Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/invigilator/v1/agent.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Event payloads are shown as JSON by the collector's CLI and API.
        .type_attribute("invigilator.v1.ProcessExec", "#[derive(serde::Serialize)]")
        .type_attribute("invigilator.v1.Gap", "#[derive(serde::Serialize)]")
        .type_attribute("invigilator.v1.UsbDevice", "#[derive(serde::Serialize)]")
        .type_attribute(
            "invigilator.v1.SessionChange",
            "#[derive(serde::Serialize)]",
        )
        .type_attribute(
            "invigilator.v1.BrowsingVisit",
            "#[derive(serde::Serialize)]",
        )
        .compile_fds(fds)?;
    Ok(())
}
