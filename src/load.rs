//! `herdgate load`: the load generator is the `herdgate-load` binary, built
//! beside this one from `load-testing/herdgate-load/` (`cargo build --release`
//! builds both). This command only runs it, so the gateway carries no HTTP
//! client, histogram or scenario code.

use std::{
    ffi::OsString,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
};

/// The generator's binary.
pub const BINARY: &str = "herdgate-load";

/// Replaces this process with `herdgate-load args...`: its output, exit code
/// and signals are the command's own. Returns only when it could not start,
/// with the reason.
pub fn exec(args: &[OsString]) -> anyhow::Error {
    let binary = locate(std::env::current_exe().ok().as_deref());
    let error = std::process::Command::new(&binary).args(args).exec();
    anyhow::Error::new(error).context(format!(
        "failed to run {} (build it with `cargo build --release`, which builds \
         herdgate and {BINARY} side by side)",
        binary.display()
    ))
}

/// `herdgate-load` next to `current` (the running herdgate), where cargo puts
/// it; otherwise the name alone, looked up on PATH.
fn locate(current: Option<&Path>) -> PathBuf {
    current
        .map(|exe| exe.with_file_name(BINARY))
        .filter(|sibling| sibling.is_file())
        .unwrap_or_else(|| PathBuf::from(BINARY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_found_beside_herdgate_or_on_path() {
        let dir = std::env::temp_dir().join(format!("herdgate-load-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let herdgate = dir.join("herdgate");
        assert_eq!(locate(Some(&herdgate)), PathBuf::from(BINARY));
        std::fs::write(dir.join(BINARY), b"").unwrap();
        assert_eq!(locate(Some(&herdgate)), dir.join(BINARY));
        assert_eq!(locate(None), PathBuf::from(BINARY));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
