//! A Kubernetes API failure, shown as one short line. `kube::Error`'s own
//! `Display` repeats the status as a Rust debug dump; an init container's last
//! log line should instead say what the API server answered and, for the
//! common `403`, what to grant.

use std::fmt;

use kube::core::Status;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub struct ApiError(#[source] pub kube::Error);

impl ApiError {
    /// The API server's answer, when there was one.
    pub fn status(&self) -> Option<&Status> {
        match &self.0 {
            kube::Error::Api(status) => Some(status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status().is_some_and(|status| status.is_not_found())
    }

    /// `409 AlreadyExists`: a create lost to another writer.
    pub fn is_already_exists(&self) -> bool {
        self.status().is_some_and(|status| status.is_already_exists())
    }

    /// `409 Conflict`: an update carried a stale `resourceVersion`.
    pub fn is_conflict(&self) -> bool {
        self.status()
            .is_some_and(|status| status.is_conflict() && !status.is_already_exists())
    }
}

impl From<kube::Error> for ApiError {
    fn from(err: kube::Error) -> Self {
        Self(err)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status() {
            Some(status) => {
                write!(f, "the API server answered {}", status.code)?;
                if !status.reason.is_empty() {
                    write!(f, " {}", status.reason)?;
                }
                if !status.message.is_empty() {
                    write!(f, " ({})", status.message)?;
                }
                if status.is_forbidden() {
                    write!(f, "; grant this permission to the pod's service account")?;
                }
                Ok(())
            }
            None => write!(f, "the Kubernetes API is unreachable ({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> ApiError {
        ApiError(kube::Error::Api(
            Status {
                code,
                reason: reason.to_owned(),
                message: message.to_owned(),
                ..Status::failure(message, reason)
            }
            .boxed(),
        ))
    }

    #[test]
    fn forbidden_says_what_to_grant() {
        let err = status(
            403,
            "Forbidden",
            "secrets \"imageswap-tls\" is forbidden: User \"system:serviceaccount:x:y\" cannot get resource \"secrets\"",
        );
        let line = err.to_string();
        assert!(
            line.starts_with("the API server answered 403 Forbidden (secrets \"imageswap-tls\" is forbidden")
        );
        assert!(line.ends_with("; grant this permission to the pod's service account"));
    }

    #[test]
    fn conflicts_and_already_exists_are_told_apart() {
        let exists = status(409, "AlreadyExists", "secrets \"x\" already exists");
        let stale = status(409, "Conflict", "the object has been modified");
        assert!(exists.is_already_exists() && !exists.is_conflict());
        assert!(stale.is_conflict() && !stale.is_already_exists());
        assert!(status(404, "NotFound", "").is_not_found());
    }
}
