//! The in-memory log capture: what a subscriber under test writes, kept for
//! the test to read. It is the writer itself (a `MakeWriter`), so it goes
//! wherever the program takes one (`logging::dispatch`, a `fmt` subscriber);
//! [`LogCapture::on_this_thread`] is the short way for tests whose code runs
//! on the test's own thread (a current-thread runtime).

use std::io::Write;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

/// A [`LogCapture`] receiving this thread's events while it lives.
pub struct ThreadCapture {
    logs: LogCapture,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Deref for ThreadCapture {
    type Target = LogCapture;

    fn deref(&self) -> &LogCapture {
        &self.logs
    }
}

impl LogCapture {
    /// Captures the events of this thread, as text without colours, DEBUG
    /// and above, until the returned guard is dropped.
    pub fn on_this_thread() -> ThreadCapture {
        let logs = LogCapture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(logs.clone())
            .finish();
        ThreadCapture {
            _guard: tracing::subscriber::set_default(subscriber),
            logs,
        }
    }

    fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panicking writer thread must not hide the real failure behind poison.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Every line, parsed as JSON (panics on one that is not).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
            .collect()
    }
}

impl Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.bytes().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}
