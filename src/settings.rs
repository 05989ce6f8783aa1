//! What every module's settings share: one family of value parsers for the
//! `#[derive(clap::Args)]` structs that live beside the code using them, and
//! one way to name a setting as an operator sets it, `VARIABLE (--flag)`,
//! taken from clap's own metadata so no name is typed twice.
//!
//! A value parser here knows which argument it parses, so its error names
//! the variable and the flag (clap names only the flag, and in a pod the
//! value came from the variable) and fits on one line:
//! `IMAGESWAP_REQUEST_TIMEOUT (--request-timeout): expected a duration such
//! as 2s or 500ms, got "soon" (…)`.

use std::ffi::OsStr;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// A typed setting value: how it is read from text and what it accepts.
pub trait SettingValue: Sized + Clone + Send + Sync + 'static {
    /// What the setting accepts, for the error line ("a duration such as 2s").
    const EXPECTED: &'static str;

    /// Parses the text of a flag or variable (already trimmed); the error is
    /// the detail shown after what is expected.
    fn parse_setting(text: &str) -> Result<Self, String>;
}

impl SettingValue for Duration {
    const EXPECTED: &'static str = "a duration such as 2s, 500ms, 5m or 180days";

    fn parse_setting(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text).map_err(|e| e.to_string())
    }
}

impl SettingValue for bool {
    const EXPECTED: &'static str = "true or false (any case), or 1 or 0";

    /// The original's `TRUE`/`FALSE`, in any case, and `1`/`0`: every
    /// boolean setting reads the same, so copying the ConfigMap's style
    /// works for all of them.
    fn parse_setting(text: &str) -> Result<bool, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("not a boolean".to_owned()),
        }
    }
}

impl SettingValue for SocketAddr {
    const EXPECTED: &'static str = "an address such as 0.0.0.0:5000";

    fn parse_setting(text: &str) -> Result<SocketAddr, String> {
        text.parse().map_err(|e: std::net::AddrParseError| e.to_string())
    }
}

/// Counts (bytes, entries, requests): plain non-negative integers.
macro_rules! count_setting {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            const EXPECTED: &'static str = "a whole number";

            fn parse_setting(text: &str) -> Result<$t, String> {
                text.parse().map_err(|e: std::num::ParseIntError| e.to_string())
            }
        }
    )*};
}
count_setting!(u64, usize);

/// The clap value parser of a [`SettingValue`]: `value_parser = setting::<Duration>()`.
pub fn setting<T: SettingValue>() -> SettingParser<T> {
    SettingParser(PhantomData)
}

/// See [`setting`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SettingParser<T>(PhantomData<fn() -> T>);

impl<T: SettingValue> TypedValueParser for SettingParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        T::parse_setting(text.trim()).map_err(|detail| {
            refused(
                arg,
                ErrorKind::ValueValidation,
                T::EXPECTED,
                &text,
                &format!(" ({detail})"),
            )
        })
    }
}

/// The one line every refused value gets: `VARIABLE (--flag): expected …,
/// got "…"` and a detail. `raw`: clap's own format adds usage lines.
fn refused(
    arg: Option<&clap::Arg>,
    kind: ErrorKind,
    expected: &str,
    text: &str,
    detail: &str,
) -> clap::Error {
    let name = arg.map_or_else(SettingName::default, SettingName::of);
    clap::Error::raw(
        kind,
        format!("{name}: expected {expected}, got {text:?}{detail}\n"),
    )
}

/// The clap value parser of an enum setting (`IMAGESWAP_MODE`,
/// `IMAGESWAP_LOG_FORMAT`, …): any case, and a bad value gives the same one
/// line as every other setting, listing the accepted words.
pub fn choice<T: ValueEnum + Clone + Send + Sync + 'static>() -> ChoiceParser<T> {
    ChoiceParser(PhantomData)
}

/// See [`choice`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ChoiceParser<T>(PhantomData<fn() -> T>);

impl<T: ValueEnum + Clone + Send + Sync + 'static> TypedValueParser for ChoiceParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        T::from_str(text.trim(), true).map_err(|_| {
            let words: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|v| v.get_name().to_owned())
                .collect();
            let expected = format!("one of {} (any case)", words.join(", "));
            refused(arg, ErrorKind::InvalidValue, &expected, &text, "")
        })
    }

    /// The words `--help` lists.
    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            T::value_variants().iter().filter_map(|v| v.to_possible_value()),
        ))
    }
}

/// A setting as an operator sets it: its environment variable and its flag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettingName {
    pub variable: Option<String>,
    pub flag: Option<String>,
}

impl SettingName {
    /// The name of a clap argument.
    pub fn of(arg: &clap::Arg) -> SettingName {
        SettingName {
            variable: arg.get_env().map(|v| v.to_string_lossy().into_owned()),
            flag: arg.get_long().map(|long| format!("--{long}")),
        }
    }

    /// The name of the field `id` of the settings struct `A`. An unknown id
    /// is a programming error; it still gives a usable name (the id).
    pub fn in_args<A: clap::Args>(id: &str) -> SettingName {
        let command = A::augment_args(clap::Command::new("settings"));
        match command.get_arguments().find(|arg| arg.get_id() == id) {
            Some(arg) => SettingName::of(arg),
            None => SettingName {
                variable: None,
                flag: Some(id.to_owned()),
            },
        }
    }
}

/// `VARIABLE (--flag)`, or whichever of the two exists.
impl fmt::Display for SettingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.variable, &self.flag) {
            (Some(variable), Some(flag)) => write!(f, "{variable} ({flag})"),
            (Some(name), None) | (None, Some(name)) => f.write_str(name),
            (None, None) => f.write_str("a setting"),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        inner: ProbeArgs,
    }

    #[derive(Debug, Args)]
    struct ProbeArgs {
        /// A timeout.
        #[arg(long, env = "PROBE_TIMEOUT", default_value = "2s", value_parser = setting::<Duration>())]
        timeout: Duration,
        /// A count.
        #[arg(long = "max-things", env = "PROBE_MAX", default_value = "3", value_parser = setting::<u64>())]
        max: u64,
        /// A switch.
        #[arg(long, env = "PROBE_ON", default_value = "false", action = clap::ArgAction::Set,
            value_parser = setting::<bool>())]
        on: bool,
    }

    #[test]
    fn names_come_from_clap_metadata() {
        assert_eq!(
            SettingName::in_args::<ProbeArgs>("max").to_string(),
            "PROBE_MAX (--max-things)"
        );
        assert_eq!(
            SettingName::in_args::<ProbeArgs>("timeout").to_string(),
            "PROBE_TIMEOUT (--timeout)"
        );
    }

    #[test]
    fn a_bad_value_is_one_line_naming_variable_flag_and_value() {
        let err = Probe::try_parse_from(["probe", "--max-things", "many"]).expect_err("refused");
        let message = err.to_string();
        assert!(message.contains("PROBE_MAX (--max-things)"), "{message}");
        assert!(message.contains("\"many\""), "{message}");
        assert!(message.contains("a whole number"), "{message}");
        assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    }

    #[test]
    fn values_are_typed_and_trimmed() {
        let probe = Probe::try_parse_from(["probe", "--timeout", " 500ms ", "--on", "TRUE"]).expect("parses");
        assert_eq!(probe.inner.timeout, Duration::from_millis(500));
        assert!(probe.inner.on);
        assert_eq!(probe.inner.max, 3);
        assert_eq!(bool::parse_setting("False"), Ok(false));
        assert!(bool::parse_setting("yes").is_err());
        assert_eq!(
            Duration::parse_setting("180days"),
            Ok(Duration::from_secs(180 * 86_400))
        );
    }
}
