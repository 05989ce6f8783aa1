//! Platforms (issue 21 item 5): a mirror that has the tag but not the
//! node's architecture (a proxy cache or a sync that copied only
//! `linux/amd64`) fails every pull on the other nodes, so with a platform
//! required a target passes only when its index (or its single manifest's
//! config) lists every required platform.
//!
//! A required platform names what the pod pins: `os`, `architecture`, and
//! `variant` only when asked (`linux/arm/v7`); an absent part matches any.

use std::fmt;

/// One platform, as `IMAGESWAP_VERIFY_PLATFORMS` and the pod spec say it,
/// or as an index entry or image config lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
}

impl Platform {
    /// Whether `available` (a manifest's platform) satisfies this
    /// requirement: each part this one names is equal; the variant counts
    /// only when asked.
    pub fn satisfied_by(&self, available: &Platform) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_ref().is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        same(&self.os, &available.os)
            && same(&self.architecture, &available.architecture)
            && same(&self.variant, &available.variant)
    }

    /// The first platform of `required` that no entry of `available`
    /// satisfies.
    pub fn first_missing<'a>(required: &'a [Platform], available: &[Platform]) -> Option<&'a Platform> {
        required
            .iter()
            .find(|want| !available.iter().any(|have| want.satisfied_by(have)))
    }
}

impl fmt::Display for Platform {
    /// `linux/arm64`, `linux/arm/v7`; `arm64` for an architecture on any
    /// OS, `windows` for an OS on any architecture.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.os, &self.architecture) {
            (Some(os), Some(arch)) => write!(f, "{os}/{arch}")?,
            (None, Some(arch)) => f.write_str(arch)?,
            (Some(os), None) => f.write_str(os)?,
            (None, None) => f.write_str("*")?,
        }
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// The setting's platforms without its empty entries.
pub fn required(setting: &[Platform]) -> Vec<Platform> {
    setting
        .iter()
        .filter(|p| **p != Platform::default())
        .cloned()
        .collect()
}

/// Writes a requirement list as a cache key suffix and in logs:
/// `linux/amd64,linux/arm64`.
pub fn list(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(Platform::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// What `IMAGESWAP_VERIFY_PLATFORMS` expects (its setting parser is
/// `verify::platform`'s: this module stays free of the settings).
pub const EXPECTED: &str =
    "platforms os/architecture[/variant], comma-separated, e.g. linux/amd64,linux/arm64";

impl Platform {
    /// One entry of `IMAGESWAP_VERIFY_PLATFORMS` (`linux/arm64`,
    /// `linux/arm/v7`); an empty one is the empty platform, skipped by
    /// [`required`].
    pub fn parse(text: &str) -> Result<Platform, String> {
        let part = |p: &str| -> Result<String, String> {
            if !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                Ok(p.to_ascii_lowercase())
            } else {
                Err(format!("{p:?} is not an OS, architecture or variant name"))
            }
        };
        // An empty entry (an empty variable, a trailing comma) is skipped
        // by [`required`].
        if text.trim().is_empty() {
            return Ok(Platform::default());
        }
        let parts: Vec<&str> = text.trim().split('/').collect();
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: Some(part(os)?),
                architecture: Some(part(arch)?),
                variant: None,
            }),
            [os, arch, variant] => Ok(Platform {
                os: Some(part(os)?),
                architecture: Some(part(arch)?),
                variant: Some(part(variant)?),
            }),
            _ => Err(format!("{text:?} is not os/architecture[/variant]")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: Option<&str>, arch: Option<&str>, variant: Option<&str>) -> Platform {
        Platform {
            os: os.map(str::to_owned),
            architecture: arch.map(str::to_owned),
            variant: variant.map(str::to_owned),
        }
    }

    #[test]
    fn a_requirement_names_what_must_match_and_the_variant_only_when_asked() {
        let arm64 = p(Some("linux"), Some("arm64"), None);
        let arm64_v8 = p(Some("linux"), Some("arm64"), Some("v8"));
        let arm_v7 = p(Some("linux"), Some("arm"), Some("v7"));
        assert!(arm64.satisfied_by(&arm64_v8), "variant ignored unless asked");
        assert!(!arm_v7.satisfied_by(&p(Some("linux"), Some("arm"), Some("v6"))));
        assert!(p(None, Some("arm64"), None).satisfied_by(&arm64), "any OS");
        assert!(!p(None, Some("arm64"), None).satisfied_by(&p(Some("linux"), Some("amd64"), None)));
        let amd64 = p(Some("linux"), Some("amd64"), None);
        assert_eq!(
            Platform::first_missing(&[amd64.clone(), arm64.clone()], std::slice::from_ref(&amd64)),
            Some(&arm64)
        );
        assert_eq!(
            Platform::first_missing(std::slice::from_ref(&amd64), &[arm64_v8, amd64.clone()]),
            None
        );
        assert_eq!(arm_v7.to_string(), "linux/arm/v7");
        assert_eq!(p(None, Some("arm64"), None).to_string(), "arm64");
    }

    #[test]
    fn the_setting_takes_os_architecture_and_an_optional_variant() {
        assert_eq!(
            Platform::parse("linux/arm64"),
            Ok(p(Some("linux"), Some("arm64"), None))
        );
        assert_eq!(
            Platform::parse("Linux/ARM/v7"),
            Ok(p(Some("linux"), Some("arm"), Some("v7")))
        );
        for bad in ["arm64", "linux/", "linux/arm64/v8/x", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
