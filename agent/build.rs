//! Compiles the eBPF exec program (src/platform/linux/bpf/exec.bpf.c) with clang into a libbpf
//! skeleton, `$OUT_DIR/exec.skel.rs`, and sets `cfg(invigilator_bpf)` when it did. The object is
//! built here from source every time, never checked in. Without clang (or with the `ebpf`
//! feature off, or for another OS) the agent builds without it and runs the proc connector.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(invigilator_bpf)");
    println!("cargo::rerun-if-changed=src/platform/linux/bpf");
    println!("cargo::rerun-if-env-changed=CLANG");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    // The feature is the build script's own (`cfg(feature)`), since libbpf-cargo is optional.
    #[cfg(feature = "ebpf")]
    if linux {
        bpf::build();
    }
    #[cfg(not(feature = "ebpf"))]
    let _ = linux;
}

#[cfg(feature = "ebpf")]
mod bpf {
    use std::path::PathBuf;
    use std::process::Command;

    pub fn build() {
        let clang = std::env::var_os("CLANG").unwrap_or_else(|| "clang".into());
        let found = Command::new(&clang)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            println!(
                "cargo::warning=clang not found (set CLANG to its path): building the agent \
                 without its eBPF exec source; it will run the proc connector instead"
            );
            return;
        }
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("exec.skel.rs");
        let result = libbpf_cargo::SkeletonBuilder::new()
            .source("src/platform/linux/bpf/exec.bpf.c")
            .clang(&clang)
            .clang_args(["-Isrc/platform/linux/bpf", "-Wall", "-Werror"])
            .build_and_generate(&out);
        if let Err(err) = result {
            // A BPF program that does not compile is a bug in this repository, not a missing
            // tool: fail loudly rather than ship an agent that silently lost its source.
            panic!("compiling src/platform/linux/bpf/exec.bpf.c: {err:#}");
        }
        println!("cargo::rustc-cfg=invigilator_bpf");
    }
}
