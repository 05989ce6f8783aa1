//! Reading watched files (blocking; run on the blocking pool): fingerprint
//! the content, and build the new value only when the content changed.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use notify::EventKind;
use notify::event::{AccessKind, AccessMode};
use rustls::sign::CertifiedKey;

use crate::cache::RulesState;
use crate::rules::read_maps_text;
use crate::server::tls;
use crate::swap::{Engine, Finding};

/// A content hash: equal content, equal fingerprint. SipHash with fixed
/// keys; collisions would need a crafted file, and the worst they do is
/// delay a reload to the next change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Fingerprint {
    pub fn of(parts: &[&[u8]]) -> Fingerprint {
        let mut hasher = DefaultHasher::new();
        for part in parts {
            part.hash(&mut hasher);
        }
        Fingerprint(hasher.finish())
    }
}

/// The result of looking at a watched file.
#[derive(Debug)]
pub enum Read<T> {
    /// Same content as what is published.
    Unchanged,
    Loaded {
        value: T,
        fingerprint: Fingerprint,
    },
    /// The file cannot be used; the fingerprint identifies the failure (the
    /// content, or the error when there is no content).
    Failed {
        error: String,
        fingerprint: Fingerprint,
    },
}

/// Reads and compiles the maps file unless its content is `loaded`.
pub fn read_maps(
    path: &Path,
    loaded: Option<Fingerprint>,
    capacity: u64,
) -> Read<(RulesState, Vec<Finding>)> {
    let text = match read_maps_text(path) {
        Ok(text) => text,
        Err(e) => {
            let error = e.to_string();
            let fingerprint = Fingerprint::of(&[error.as_bytes()]);
            return Read::Failed { error, fingerprint };
        }
    };
    let fingerprint = Fingerprint::of(&[text.as_bytes()]);
    if loaded == Some(fingerprint) {
        return Read::Unchanged;
    }
    let (engine, findings) = Engine::from_maps_text(&text);
    Read::Loaded {
        value: (RulesState::new(engine, capacity), findings),
        fingerprint,
    }
}

/// Reads and checks the certificate pair unless its content is `loaded`.
pub fn read_pair(cert: &Path, key: &Path, loaded: Option<Fingerprint>) -> Read<CertifiedKey> {
    let failed = |error: String| {
        let fingerprint = Fingerprint::of(&[error.as_bytes()]);
        Read::Failed { error, fingerprint }
    };
    let cert_pem = match std::fs::read(cert) {
        Ok(pem) => pem,
        Err(e) => return failed(format!("cannot read {}: {e}", cert.display())),
    };
    let key_pem = match std::fs::read(key) {
        Ok(pem) => pem,
        Err(e) => return failed(format!("cannot read {}: {e}", key.display())),
    };
    let fingerprint = Fingerprint::of(&[&cert_pem, &key_pem]);
    if loaded == Some(fingerprint) {
        return Read::Unchanged;
    }
    match tls::pair_from_pem(&cert_pem, &key_pem, cert, key) {
        Ok(pair) => Read::Loaded {
            value: pair,
            fingerprint,
        },
        Err(e) => Read::Failed {
            error: e.to_string(),
            fingerprint,
        },
    }
}

/// Whether a file event can mean new content. Opening and reading (our own
/// reads among them) cannot; everything else, including a close after
/// writing, can.
pub fn is_relevant(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_content_is_not_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("maps.conf");
        std::fs::write(&path, "default::a.example\n").expect("write");
        let Read::Loaded { fingerprint, .. } = read_maps(&path, None, 10) else {
            panic!("first read loads");
        };
        assert!(matches!(read_maps(&path, Some(fingerprint), 10), Read::Unchanged));
        std::fs::write(&path, "default::b.example\n").expect("write");
        assert!(matches!(
            read_maps(&path, Some(fingerprint), 10),
            Read::Loaded { .. }
        ));
    }

    #[test]
    fn unreadable_and_non_utf8_files_fail_with_a_stable_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("maps.conf");
        std::fs::write(&path, b"default::\xff\n").expect("write");
        let Read::Failed { error, fingerprint } = read_maps(&path, None, 10) else {
            panic!("not UTF-8 fails");
        };
        assert!(error.contains("not UTF-8"), "{error}");
        let Read::Failed {
            fingerprint: again, ..
        } = read_maps(&path, None, 10)
        else {
            panic!("still fails");
        };
        assert_eq!(fingerprint, again);
        let missing = dir.path().join("missing.conf");
        assert!(matches!(read_maps(&missing, None, 10), Read::Failed { .. }));
    }

    #[test]
    fn our_own_reads_are_not_events() {
        use notify::event::{CreateKind, ModifyKind};
        assert!(!is_relevant(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_relevant(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_relevant(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_relevant(&EventKind::Create(CreateKind::Any)));
        assert!(is_relevant(&EventKind::Modify(ModifyKind::Any)));
    }
}
