//! The answer's deadline. The API server appends `?timeout=<Go duration>`
//! (the webhook's `timeoutSeconds`) to the URL and gives up on the webhook
//! after that; an answer it never reads is worth nothing, so ImageSwap aims
//! to answer a margin before it, and never later than its own request
//! timeout.

use std::time::Duration;

/// Part of the API server's timeout kept for the answer's trip back.
const MARGIN_FRACTION: u32 = 10;
/// Bounds of that margin.
const MIN_MARGIN: Duration = Duration::from_millis(50);
const MAX_MARGIN: Duration = Duration::from_millis(500);

/// The time budget of a request: the request timeout, or less when the API
/// server's `timeout` query parameter leaves less.
pub fn budget(request_timeout: Duration, query: Option<&str>) -> Duration {
    match query.and_then(apiserver_timeout) {
        Some(timeout) => {
            let margin = (timeout / MARGIN_FRACTION).clamp(MIN_MARGIN, MAX_MARGIN);
            request_timeout.min(timeout.saturating_sub(margin))
        }
        None => request_timeout,
    }
}

/// The `timeout` parameter of a query string, when it is a Go duration.
pub fn apiserver_timeout(query: &str) -> Option<Duration> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(parse_go_duration)
}

/// Parses Go's `time.Duration` text: a sequence of decimal numbers with
/// units (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as `10s`, `1m30s`,
/// `1.5s`. Negative durations are refused.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(Duration::try_from_secs_f64(number * seconds_per_unit).ok()?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        for (text, expected) in [
            ("10s", Duration::from_secs(10)),
            ("30s", Duration::from_secs(30)),
            ("1m0s", Duration::from_secs(60)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("500ms", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("1h", Duration::from_secs(3600)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_go_duration(text), Some(expected), "{text}");
        }
        for bad in ["", "10", "s", "-1s", "10x", "1..5s", "ten seconds"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_budget_leaves_a_margin_before_the_apiserver_gives_up() {
        let two = Duration::from_secs(2);
        assert_eq!(budget(two, None), two);
        assert_eq!(budget(two, Some("timeout=10s")), two);
        assert_eq!(budget(two, Some("a=b&timeout=1s")), Duration::from_millis(900));
        assert_eq!(
            budget(Duration::from_secs(30), Some("timeout=30s")),
            Duration::from_millis(29_500)
        );
        assert_eq!(budget(two, Some("timeout=junk")), two);
        assert_eq!(budget(two, Some("timeout=10ms")), Duration::ZERO);
    }
}
