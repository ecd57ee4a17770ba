//! What ACME keeps on disk, in `acme.storage`: the account (`account.json`: the directory
//! URL and the account's key) and each certificate (`DOMAIN.crt.pem`, the chain leaf first,
//! and `DOMAIN.key.pem`, named after the first domain). The directory is made with mode
//! 0700 and every file is written with 0600, whole (a temporary file, then a rename).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;

/// An ACME storage directory.
#[derive(Debug, Clone)]
pub struct Storage {
    dir: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: serde_json::Value,
}

impl Storage {
    pub fn new(dir: &Path) -> Storage {
        Storage {
            dir: dir.to_path_buf(),
        }
    }

    /// The account stored for `directory`, if any (one made at another directory is not).
    ///
    /// # Errors
    /// An unreadable or corrupt file.
    pub fn load_account(&self, directory: &str) -> Result<Option<AccountCredentials>, String> {
        let Some(text) = self.read("account.json")? else {
            return Ok(None);
        };
        let stored: StoredAccount = serde_json::from_str(&text)
            .map_err(|e| format!("{}: {e}", self.dir.join("account.json").display()))?;
        if stored.directory != directory {
            return Ok(None);
        }
        serde_json::from_value(stored.credentials)
            .map(Some)
            .map_err(|e| format!("{}: {e}", self.dir.join("account.json").display()))
    }

    /// # Errors
    /// When the directory or file cannot be written.
    pub fn save_account(
        &self,
        directory: &str,
        credentials: &AccountCredentials,
    ) -> Result<(), String> {
        let stored = StoredAccount {
            directory: directory.to_string(),
            credentials: serde_json::to_value(credentials).map_err(|e| e.to_string())?,
        };
        let text = serde_json::to_string_pretty(&stored).map_err(|e| e.to_string())?;
        self.write("account.json", text.as_bytes())
    }

    /// The stored chain and key PEM of the certificate named after `domain`, if both exist.
    ///
    /// # Errors
    /// An unreadable file.
    pub fn load_cert(&self, domain: &str) -> Result<Option<(String, String)>, String> {
        let chain = self.read(&format!("{domain}.crt.pem"))?;
        let key = self.read(&format!("{domain}.key.pem"))?;
        Ok(chain.zip(key))
    }

    /// Stores a certificate: the key first, so a chain on disk always has its key.
    ///
    /// # Errors
    /// When the directory or a file cannot be written.
    pub fn save_cert(&self, domain: &str, chain: &str, key: &str) -> Result<(), String> {
        self.write(&format!("{domain}.key.pem"), key.as_bytes())?;
        self.write(&format!("{domain}.crt.pem"), chain.as_bytes())
    }

    fn read(&self, name: &str) -> Result<Option<String>, String> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let fail = |what: &Path, e: std::io::Error| format!("cannot write {}: {e}", what.display());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| fail(&self.dir, e))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(&self.dir, e))?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail(&tmp, e))?;
        // A file left by an earlier run keeps its mode through `open`: set it again.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| file.write_all(bytes))
            .and_then(|()| file.sync_all())
            .map_err(|e| fail(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| fail(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_are_private_and_read_back() {
        let root = std::env::temp_dir().join(format!("torii-acme-{}", std::process::id()));
        let dir = root.join("nested/acme");
        let storage = Storage::new(&dir);
        assert_eq!(storage.load_cert("example.com").unwrap(), None);
        storage.save_cert("example.com", "CHAIN", "KEY").unwrap();
        assert_eq!(
            storage.load_cert("example.com").unwrap(),
            Some(("CHAIN".to_string(), "KEY".to_string()))
        );
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        for f in ["example.com.crt.pem", "example.com.key.pem"] {
            assert_eq!(
                std::fs::metadata(dir.join(f)).unwrap().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(dir.join("account.json"), "not json").unwrap();
        assert!(storage.load_account("https://x.test/dir").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
