//! Build-time facts for the binary:
//!
//! - the git commit Herald is built from, for `herald --version`. `HERALD_GIT_COMMIT` wins
//!   when set (a container build whose context has no `.git`); otherwise
//!   `git rev-parse --short HEAD`; outside a git checkout, "unknown";
//! - the list of example policies `herald demo` embeds: every `examples/policies/*.yaml`, so
//!   an example added there is in the demo without a list to keep by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    record_git_commit();
    list_example_policies();
}

fn record_git_commit() {
    println!("cargo:rerun-if-env-changed=HERALD_GIT_COMMIT");
    let commit = match std::env::var("HERALD_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself (a branch switch, a detached checkout), the
            // branch it points at (a commit), and packed-refs (a ref packed by gc). `--git-path`
            // finds them in worktrees too.
            // Only files that exist: cargo reruns a build script on every build while a path it
            // was told to watch is missing (and then rebuilds the crate each time).
            let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
            watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
            for path in watch {
                if let Some(p) = git(&["rev-parse", "--git-path", &path]) {
                    if Path::new(&p).exists() {
                        println!("cargo:rerun-if-changed={p}");
                    }
                }
            }
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=HERALD_GIT_COMMIT={commit}");
}

/// Writes `$OUT_DIR/example_policies.rs`: `EXAMPLE_POLICIES`, each example policy file's name
/// and text (`include_str!`, so an edit to a file rebuilds), sorted by name.
fn list_example_policies() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("../../examples/policies");
    // A directory: cargo reruns this script when a file in it is added, removed or changed.
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| {
            let name = path.file_name().expect("a file name").to_string_lossy();
            (name.into_owned(), path)
        })
        .collect();
    files.sort();
    let mut code = format!(
        "/// The example policies (`examples/policies/*.yaml`), listed by build.rs.\n\
         const EXAMPLE_POLICIES: [(&str, &str); {}] = [\n",
        files.len()
    );
    for (name, path) in &files {
        code.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display()
        ));
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("example_policies.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
