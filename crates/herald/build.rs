//! Records the git commit Herald is built from, for `herald --version`.
//!
//! `HERALD_GIT_COMMIT` wins when set (a container build whose context has no `.git`);
//! otherwise `git rev-parse --short HEAD`; outside a git checkout, "unknown".

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
                    if std::path::Path::new(&p).exists() {
                        println!("cargo:rerun-if-changed={p}");
                    }
                }
            }
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=HERALD_GIT_COMMIT={commit}");
}
