//! Build script: the commit this binary is built from, for `goflow_build_info` on /metrics
//! (`GOFLOW_COMMIT`: `git rev-parse --short=12 HEAD`; `unknown` outside a git checkout or
//! without git).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GOFLOW_COMMIT={commit}");
    // A new commit (or checkout) changes HEAD's reflog; the source files themselves already
    // trigger a rebuild.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/logs/HEAD");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
