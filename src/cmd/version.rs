//! `goflow -V` / `--version`: the version, the commit it was built from, the backend types this
//! build has, and whether io_uring receive is usable on this machine (else recvmmsg is used).

/// Backend types and whether this build has them (`mysql` and `kafka` are cargo features).
pub fn backends() -> [(&'static str, bool); 7] {
    [
        ("file", true),
        ("dump", true),
        ("null", true),
        ("postgres", true),
        ("timescale", true),
        ("mysql", cfg!(feature = "mysql")),
        ("kafka", cfg!(feature = "kafka")),
    ]
}

/// The text `goflow --version` prints.
pub fn text() -> String {
    let built: Vec<&str> = backends()
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
    let missing: Vec<&str> = backends()
        .iter()
        .filter(|(_, on)| !on)
        .map(|(n, _)| *n)
        .collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let uring = match crate::ingest::probe_uring() {
        Ok(()) => format!("usable here (kernel {kernel}): `receiver: auto` uses it"),
        Err(why) => format!("not usable here (kernel {kernel}: {why}): recvmmsg is used"),
    };
    let mut s = format!(
        "goflow {} (commit {})\nbackends: {}",
        env!("CARGO_PKG_VERSION"),
        env!("GOFLOW_COMMIT"),
        built.join(", ")
    );
    if !missing.is_empty() {
        s.push_str(&format!(" (not in this build: {})", missing.join(", ")));
    }
    s.push_str(&format!("\nio_uring: {uring}\n"));
    s
}
