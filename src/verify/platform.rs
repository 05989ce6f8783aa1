//! Platforms as verification requires them: the type and its matching
//! live in the pure core ([`crate::swap::platform`], which admission reads
//! pod specs into); here is how `IMAGESWAP_VERIFY_PLATFORMS` parses.

pub use crate::swap::platform::{Platform, list, required};

use crate::settings::SettingValue;

impl SettingValue for Platform {
    const EXPECTED: &'static str = crate::swap::platform::EXPECTED;

    fn parse_setting(text: &str) -> Result<Platform, String> {
        Platform::parse(text)
    }
}
