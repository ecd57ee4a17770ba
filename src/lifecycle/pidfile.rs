//! `server.pid_file`: written atomically (a temporary file beside it, then a rename), so a
//! reader never sees a half-written PID; removed on a clean exit only while it still
//! names this process (after an upgrade it names the new one).

use std::path::{Path, PathBuf};

/// A pid file being written: [`PidFile::prepare`] before serving (so an unwritable path
/// stops the start), [`PidFile::commit`] once ready.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    temp: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes this process's PID to a temporary file beside `path`.
    ///
    /// # Errors
    /// When the temporary file cannot be written (no such directory, no permission).
    pub fn prepare(path: &Path) -> std::io::Result<PidFile> {
        let pid = std::process::id();
        let name = path
            .file_name()
            .ok_or_else(|| std::io::Error::other("not a file path"))?
            .to_string_lossy();
        let temp = path.with_file_name(format!(".{name}.{pid}.tmp"));
        std::fs::write(&temp, format!("{pid}\n"))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            temp,
            pid,
        })
    }

    /// Moves the PID into place (a rename: atomic).
    ///
    /// # Errors
    /// When the rename fails; the temporary file is then removed.
    pub fn commit(&self) -> std::io::Result<()> {
        std::fs::rename(&self.temp, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&self.temp);
        })
    }

    /// Removes the pid file if it still names this process (and any leftover temporary
    /// file). Returns whether the pid file was removed.
    pub fn remove(&self) -> bool {
        let _ = std::fs::remove_file(&self.temp);
        if read_pid(&self.path) == Some(self.pid) {
            return std::fs::remove_file(&self.path).is_ok();
        }
        false
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The PID a pid file names, if it holds one.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_atomically_and_removed_only_while_ours() {
        let dir = std::env::temp_dir().join(format!("torii-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("torii.pid");
        let pid = PidFile::prepare(&path).unwrap();
        assert!(!path.exists(), "nothing in place before commit");
        pid.commit().unwrap();
        assert_eq!(read_pid(&path), Some(std::process::id()));
        assert!(pid.remove());
        assert!(!path.exists());

        // Another process took the file over (an upgrade): it is left alone.
        let pid = PidFile::prepare(&path).unwrap();
        pid.commit().unwrap();
        std::fs::write(&path, "1\n").unwrap();
        assert!(!pid.remove());
        assert_eq!(read_pid(&path), Some(1));
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(PidFile::prepare(&dir.join("missing/dir/torii.pid")).is_err());
    }
}
