//! Writing the pair for the server: `cert.pem` and `key.pem` in the TLS
//! directory (an `emptyDir` shared with the server container). Each file is
//! written to a temporary name and renamed into place, so a reader never sees
//! half a file; the key is created with mode 0600 before any byte is written.
//! `--watch` rewrites them while the server runs: the server's reloader
//! picks the new pair up within seconds and never serves a mismatched one.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::tls_pair::TlsPair;

pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;

#[derive(Debug, Error)]
#[error("cannot write {path}: {source} (is IMAGESWAP_TLS_DIR a writable directory?)")]
pub struct FilesError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes both files: each into a temporary file first, then the two
/// renames back to back (key, then certificate), so the server's reloader
/// sees old/old, then at worst new key with old certificate for the moment
/// between two renames (which it refuses, keeping the old pair), then
/// new/new.
pub fn write_pair(dir: &Path, pair: &TlsPair) -> Result<(), FilesError> {
    fs::create_dir_all(dir).map_err(|source| FilesError {
        path: dir.to_owned(),
        source,
    })?;
    let key = dir.join(KEY_FILE);
    let cert = dir.join(CERT_FILE);
    let key_temporary = write_temporary(&key, &pair.key_pem, KEY_MODE)?;
    let cert_temporary = write_temporary(&cert, &pair.cert_pem, CERT_MODE)?;
    rename(&key_temporary, &key)?;
    rename(&cert_temporary, &cert)
}

/// The pair in the directory, when both files can be read.
pub fn read_pair(dir: &Path) -> Option<TlsPair> {
    Some(TlsPair {
        cert_pem: fs::read(dir.join(CERT_FILE)).ok()?,
        key_pem: fs::read(dir.join(KEY_FILE)).ok()?,
    })
}

fn write_temporary(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, FilesError> {
    let error = |source| FilesError {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // A leftover from an interrupted run may carry other permissions.
    let _ = fs::remove_file(&temporary);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&temporary).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    Ok(temporary)
}

fn rename(temporary: &Path, path: &Path) -> Result<(), FilesError> {
    fs::rename(temporary, path).map_err(|source| FilesError {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_both_files_with_the_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        let pair = TlsPair {
            cert_pem: b"CERT".to_vec(),
            key_pem: b"KEY".to_vec(),
        };
        write_pair(&out, &pair).unwrap();
        // Overwrite works too (a restarted init container).
        write_pair(&out, &pair).unwrap();
        assert_eq!(fs::read(out.join(CERT_FILE)).unwrap(), b"CERT");
        assert_eq!(fs::read(out.join(KEY_FILE)).unwrap(), b"KEY");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(out.join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, KEY_MODE);
        }
        assert!(!out.join("key.pem.tmp").exists());
        assert!(!out.join("cert.pem.tmp").exists());
        assert_eq!(read_pair(&out), Some(pair));
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"").unwrap();
        let err = write_pair(
            &blocker.join("sub"),
            &TlsPair {
                cert_pem: Vec::new(),
                key_pem: Vec::new(),
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("file/sub"), "{err}");
    }
}
