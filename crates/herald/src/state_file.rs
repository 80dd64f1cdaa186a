//! Herald's small state files (threads, approvals, repeated notifications) are written whole.

use std::path::Path;

/// Writes `bytes` to `path` as a temporary file beside it, flushed to disk, then renamed over
/// the old one: a crash leaves the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
