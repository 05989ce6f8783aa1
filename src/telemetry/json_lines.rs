//! JSON log lines, written by hand: `{"timestamp":…,"level":…,"message":…,
//! <fields>…}` plus `trace_id`/`span_id` inside a traced request.
//!
//! Why not tracing-subscriber's JSON format: `serve` writes one line per
//! admission, and that formatter (a serde serializer behind an `io::Write`
//! adaptor, one small write per token) cost about 19 k instructions a line,
//! an eighth of a whole admission request over TLS (`loadtest/profile.sh`).
//! Appending to the line buffer with an escape scan that copies clean runs
//! whole costs a fraction of that. The line shape is the same as before:
//! flat fields, no target, no span list; the one exception is the review
//! line's `swaps` ([`JSON_FIELD`]), a JSON array. The review line itself
//! arrives written already, as one field ([`JSON_MEMBERS`], see [`in_use`]).

use std::fmt::{self, Write};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use crate::admission::json;

/// The one field whose value is JSON already: written as its alternate
/// `Debug` (`{:#?}`) gives it, not as a string. The review line's swaps
/// (`server::service::Swaps`): one array on the line per admission instead
/// of a line per swapped image (issue 24), and a text log (plain `Debug`)
/// reads a compact list. No other event may name a field so.
pub const JSON_FIELD: &str = "swaps";

/// The one field whose value (its alternate `Debug`) is the
/// line's fields already written as JSON object members
/// (`"uid":"…","namespace":"…",…`): spliced into the line as they are,
/// with no key of their own. The review line is written so, in one piece,
/// by its own writer (`server::service::ReviewLine`) when [`in_use`]: its
/// eleven fields through `tracing`'s visitor and this format's generic key
/// and value writers made the line's event 8.2 k instructions an admission,
/// written in one go 5.7 k (`loadtest/profile.sh`, LTO, issue 24). No other
/// event may name a field so.
pub const JSON_MEMBERS: &str = "json_members";

/// Whether this thread's subscriber writes its lines with [`JsonLines`]
/// (`--log-format json`): the review line is then written in one piece
/// ([`JSON_MEMBERS`]). Asked of the subscriber each time, not remembered:
/// tests run subscribers of both formats side by side, one per thread.
pub fn in_use() -> bool {
    tracing::dispatcher::get_default(|dispatch| dispatch.downcast_ref::<JsonLines>().is_some())
}

/// The event format of `--log-format json`.
pub struct JsonLines {
    /// The subscriber this format is part of, to find a span's trace
    /// context; set only when traces are exported.
    pub dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl JsonLines {
    /// `(trace_id, span_id)` of the span the event belongs to, when it is
    /// part of a trace.
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>, event: &Event<'_>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'w> FormatFields<'w> + 'static,
    {
        let dispatch = self.dispatch.get()?.upgrade()?;
        // Not `lookup_current`: that is filtered for this layer, which does
        // not see the trace spans.
        let id = match event.parent() {
            Some(id) => id.clone(),
            None if event.is_contextual() => ctx.current_span().id()?.clone(),
            None => return None,
        };
        let context = tracing_opentelemetry::get_otel_context(&id, &dispatch)?;
        let span = context.span();
        let ids = span.span_context();
        ids.is_valid()
            .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ids = self.ids(ctx, event);
        // The line is built in a `String` of this thread and handed to the
        // writer whole: `Writer` is a `dyn fmt::Write`, and the dozen small
        // writes of each field through it cost about 600 instructions a
        // field, 34 fields an admission (`loadtest/profile.sh`).
        LINE.with(|cell| {
            let Ok(mut line) = cell.try_borrow_mut() else {
                // Only if formatting a line logged another one.
                return write_line(&mut writer, event, ids);
            };
            line.clear();
            let result = write_line(&mut *line, event, ids).and_then(|()| writer.write_str(&line));
            if line.capacity() > LINE_KEEP_MAX_BYTES {
                *line = String::new();
            }
            result
        })
    }
}

thread_local! {
    /// The line being formatted (see `format_event`), kept between lines.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// A line buffer grown beyond this by one long line is not kept.
const LINE_KEEP_MAX_BYTES: usize = 16 * 1024;

/// `{"timestamp":…,"level":…,<fields>…[,"trace_id":…,"span_id":…]}` and a newline.
fn write_line<W: Write>(out: &mut W, event: &Event<'_>, ids: Option<(String, String)>) -> fmt::Result {
    out.write_str(r#"{"timestamp":""#)?;
    write_timestamp(out, SystemTime::now())?;
    out.write_str(r#"","level":""#)?;
    out.write_str(level_name(*event.metadata().level()))?;
    out.write_char('"')?;
    let mut fields = JsonFields {
        out: &mut *out,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    if let Some((trace_id, span_id)) = ids {
        write!(out, r#","trace_id":"{trace_id}","span_id":"{span_id}""#)?;
    }
    out.write_str("}\n")
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// Appends `,"name":value` for each field of an event.
struct JsonFields<'a, W: Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: Write> JsonFields<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.key_then(field, "\":")
    }

    /// `,"name` and then `close` (`":`, or `":"` before a string value).
    /// A name is a Rust identifier or a literal in a logging macro: nearly
    /// always nothing to escape, checked inline instead of through the
    /// escaper's pieces (log lines 19.3 k -> 18.7 k instructions an
    /// admission, `loadtest/profile.sh` without LTO).
    fn key_then(&mut self, field: &Field, close: &str) -> fmt::Result {
        let name = field.name();
        self.out.write_str(",\"")?;
        if name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.out.write_str(name)?;
        } else {
            write_escaped(self.out, name)?;
        }
        self.out.write_str(close)
    }

    fn raw(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| self.out.write_fmt(value));
        }
    }

    /// A value already formatted as JSON (a number, `true`, `false`).
    fn literal(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| self.out.write_str(value));
        }
    }

    fn string(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.key_then(field, "\":\"").and_then(|()| {
                write_escaped(self.out, value)?;
                self.out.write_char('"')
            });
        }
    }
}

impl<W: Write> Visit for JsonFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.literal(field, if value { "true" } else { "false" });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.literal(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.literal(field, itoa::Buffer::new().format(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, format_args!("{value}"));
        } else {
            // JSON has no NaN or infinities.
            self.string(field, &value.to_string());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // The message is `format_args!` (its Debug is its text); a plain
        // `&str` message arrives through `record_str`. Escaped on its way
        // into the line, not through a `String` of its own: that allocation
        // and copy cost about 3 k instructions a line (`loadtest/profile.sh`).
        if self.result.is_ok() && field.name() == JSON_FIELD {
            self.result = self.key(field).and_then(|()| write!(self.out, "{value:#?}"));
            return;
        }
        if self.result.is_ok() && field.name() == JSON_MEMBERS {
            // After a comma, unless there are none.
            let mut members = CommaFirst {
                out: &mut *self.out,
                started: false,
            };
            self.result = write!(members, "{value:#?}");
            return;
        }
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| {
                self.out.write_char('"')?;
                write!(Escaping(&mut *self.out), "{value:?}")?;
                self.out.write_char('"')
            });
        }
    }
}

/// A `fmt::Write` that puts a comma before the first text it is given.
struct CommaFirst<'a, W: Write + ?Sized> {
    out: &'a mut W,
    started: bool,
}

impl<W: Write + ?Sized> Write for CommaFirst<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !self.started && !s.is_empty() {
            self.started = true;
            self.out.write_char(',')?;
        }
        self.out.write_str(s)
    }
}

/// A `fmt::Write` that writes what it is given as the inside of a JSON string.
struct Escaping<'a, W: Write + ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s)
    }
}

thread_local! {
    /// The second last formatted on this thread and its text up to the
    /// seconds (`2026-12-01T11:31:25`): every line of a second shares it.
    static SECOND: std::cell::Cell<(u64, [u8; SECOND_PREFIX_BYTES])> =
        const { std::cell::Cell::new((u64::MAX, [0; SECOND_PREFIX_BYTES])) };
}

/// `YYYY-MM-DDTHH:MM:SS`.
const SECOND_PREFIX_BYTES: usize = 19;

/// Writes `time` as RFC 3339 UTC with microseconds, as
/// `humantime::format_rfc3339_micros` does. The date and time of day are
/// formatted (by humantime) once a second per thread and the microseconds
/// appended: formatting the whole timestamp for each line cost about 1 k
/// instructions a line, five lines an admission (`loadtest/profile.sh`).
fn write_timestamp<W: Write + ?Sized>(out: &mut W, time: SystemTime) -> fmt::Result {
    // A clock before 1970 (humantime panics on it) reads as the epoch.
    let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let time = SystemTime::UNIX_EPOCH + since_epoch;
    let second = since_epoch.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != second {
        let text = humantime::format_rfc3339_seconds(time).to_string();
        match text.as_bytes().get(..SECOND_PREFIX_BYTES) {
            Some(head) => prefix.copy_from_slice(head),
            None => return write!(out, "{}", humantime::format_rfc3339_micros(time)),
        }
        SECOND.set((second, prefix));
    }
    // The prefix is ASCII, as humantime wrote it.
    out.write_str(std::str::from_utf8(&prefix).map_err(|_| fmt::Error)?)?;
    let micros = since_epoch.subsec_micros();
    let mut digits = [b'.', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
    let mut rest = micros;
    for digit in digits[1..7].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
}

/// Writes `value` as the inside of a JSON string, with the response
/// writer's escaper: clean runs are copied whole, only `"`, `\` and
/// control characters are escaped.
fn write_escaped<W: Write + ?Sized>(out: &mut W, value: &str) -> fmt::Result {
    json::escape(value, |piece| out.write_str(piece))
}

/// What a test's subscriber wrote, shared between the writer and the test.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct CapturedLines(Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl CapturedLines {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl std::io::Write for CapturedLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(value: &str) -> String {
        let mut out = String::new();
        write_escaped(&mut out, value).unwrap();
        out
    }

    #[test]
    fn timestamps_are_humantimes_rfc3339_micros() {
        let base = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_588_685);
        // Within one second (the cached prefix), across seconds, days and
        // years, and back in time (another thread's clock may be behind).
        for offset_us in [
            0u64,
            1,
            999_999,
            1_000_000,
            86_399_999_999,
            31_536_000_000_000,
            7,
            0,
        ] {
            let time = base + std::time::Duration::from_micros(offset_us);
            let mut out = String::new();
            write_timestamp(&mut out, time).unwrap();
            assert_eq!(out, humantime::format_rfc3339_micros(time).to_string());
        }
        let mut before_epoch = String::new();
        write_timestamp(
            &mut before_epoch,
            SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(before_epoch, "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn escapes_what_json_requires() {
        assert_eq!(escaped("plain nginx:1.25"), "plain nginx:1.25");
        assert_eq!(
            escaped("a\"b\\c\nd\re\tf\u{1}g"),
            "a\\\"b\\\\c\\nd\\re\\tf\\u0001g"
        );
        assert_eq!(escaped("ünïcödé ✓"), "ünïcödé ✓");
        for value in ["", "\"", "x\u{1f}", "quote \" and \\ slash", "ünï\u{0}"] {
            let json = format!("\"{}\"", escaped(value));
            let back: String = serde_json::from_str(&json).expect("valid JSON string");
            assert_eq!(back, value);
        }
    }

    /// The text `log` writes through [`JsonLines`], and its lines parsed.
    fn json_lines_of(log: impl FnOnce()) -> (String, Vec<serde_json::Value>) {
        let buffer = CapturedLines::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines {
                dispatch: Arc::default(),
            })
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = buffer.text();
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        (text, lines)
    }

    #[test]
    fn lines_are_json_objects_with_flat_fields() {
        let (text, lines) = json_lines_of(|| {
            tracing::info!(
                uid = "a\"b",
                changed = 3u64,
                dry_run = false,
                ratio = 0.5,
                "Admission reviewed."
            );
            tracing::warn!(error = %"boom\n", "Something {} happened.", "odd");
            tracing::info!(message = "A str message.", "odd\"key" = "v", "odd\\key" = 1u64);
        });
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["message"], "Admission reviewed.");
        assert_eq!(lines[0]["uid"], "a\"b");
        assert_eq!(lines[0]["changed"], 3);
        assert_eq!(lines[0]["dry_run"], false);
        assert_eq!(lines[0]["ratio"], 0.5);
        assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["message"], "Something odd happened.");
        assert_eq!(lines[1]["error"], "boom\n");
        // A `&str` message, and field names that need escaping.
        assert_eq!(lines[2]["message"], "A str message.");
        assert_eq!(lines[2]["odd\"key"], "v");
        assert_eq!(lines[2]["odd\\key"], 1);
    }

    /// Members written already are spliced in without a key; none at all
    /// leave the line valid.
    #[test]
    fn members_written_already_are_spliced_into_the_line() {
        struct Raw(&'static str);
        impl fmt::Debug for Raw {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        let (text, lines) = json_lines_of(|| {
            tracing::info!(
                message = "Spliced.",
                { JSON_MEMBERS } = tracing::field::debug(Raw(r#""uid":"u","changed":2"#)),
                after = 1u64
            );
            tracing::info!(
                message = "None.",
                { JSON_MEMBERS } = tracing::field::debug(Raw(""))
            );
        });
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["uid"], "u", "{text}");
        assert_eq!(lines[0]["changed"], 2);
        assert_eq!(lines[0]["after"], 1);
        assert!(lines[0].get(JSON_MEMBERS).is_none(), "no key of its own: {text}");
        assert_eq!(lines[1]["message"], "None.");
        assert_eq!(lines[1].as_object().map(|o| o.len()), Some(3), "{text}");
    }
}
