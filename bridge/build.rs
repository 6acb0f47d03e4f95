//! Link-time layout of the `bridge` binary, for a smaller resident set.
//!
//! Most of a running bridge's resident memory at idle was the pages of its own machine code:
//! the ~3.7 MB of functions a deployment runs were spread over the binary's ~32 MB of code,
//! and the kernel maps code a whole page-cache folio (up to hundreds of kB) around each
//! function touched. Two linker options shrink that (docs/benchmarks.md, "Code layout"):
//!
//! - `--symbol-ordering-file=symbol-order.txt`: the functions a deployment runs (XMPP and
//!   Matrix, messages both ways; recorded by `scripts/symbol-order.sh`) are placed first, side by
//!   side. Names the file lists that the binary lacks (another cargo invocation, changed
//!   dependencies) are ignored: the order is lost, nothing else. The names are the same in
//!   every checkout because `scripts/rustc-wrapper` (`.cargo/config.toml`) remaps the
//!   checkout's path, which would otherwise reach the `.llvm.<hash>` suffixes of promoted locals.
//! - `-z pack-relative-relocs` (RELR): the ~1.6 MB table of relative relocations a
//!   position-independent executable carries becomes ~20 kB, which the dynamic loader no longer
//!   reads through at start. Needs glibc 2.36 or later at run time, so only when the build
//!   machine's glibc is that new (a binary built here runs here).
//!
//! Only for optimised builds for x86_64 Linux with glibc, where rustc links with LLD by
//! default. `BRIDGE_LINK_LAYOUT=0` turns both off (for a linker without these options, such
//! as GNU ld).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-env-changed=BRIDGE_LINK_LAYOUT");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let wanted = var("BRIDGE_LINK_LAYOUT") != "0"
        && var("PROFILE") == "release"
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if !wanted {
        return;
    }
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    if var("HOST") == var("TARGET") && host_glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// True when `getconf GNU_LIBC_VERSION` names glibc `major.minor` or later.
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
