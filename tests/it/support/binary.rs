//! The one way to start the `imageswap` binary: [`command`] (a clean
//! environment, for the one-shot subcommands) and [`Running`] (`serve` with
//! its JSON log lines read as they come, so tests wait for a line instead of
//! a time); and plain HTTP/1.1 by hand for a server started `--insecure-http`.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_imageswap");

/// How long [`Running::wait_for`] waits for a log line.
const LOG_LINE_WITHIN: Duration = Duration::from_secs(10);

/// The binary with none of the caller's settings (`IMAGESWAP_*`,
/// `IMAGE_PREFIX`, `OTEL_*`): a test sets what it means to.
pub fn command() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("IMAGESWAP_") || key.starts_with("OTEL_") || key == "IMAGE_PREFIX" {
            command.env_remove(key);
        }
    }
    command
}

/// A running `imageswap --log-format json serve …` whose JSON log lines
/// arrive on a channel.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    /// Every line read so far, in order.
    pub seen: RefCell<Vec<serde_json::Value>>,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        Running::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = command()
            .args(["--log-format", "json", "serve"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start imageswap");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(json) = serde_json::from_str(&line) {
                    let _ = tx.send(json);
                }
            }
        });
        Running {
            child,
            lines,
            seen: RefCell::default(),
        }
    }

    /// Finds (or waits for) a log line whose message starts with `prefix`.
    pub fn wait_for(&self, prefix: &str) -> serde_json::Value {
        let matches =
            |line: &serde_json::Value| line["message"].as_str().is_some_and(|m| m.starts_with(prefix));
        if let Some(line) = self.seen.borrow().iter().find(|l| matches(l)) {
            return line.clone();
        }
        let until = Instant::now() + LOG_LINE_WITHIN;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.borrow_mut().push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no log line starting with {prefix:?}");
    }

    /// The address of the main listener, from the start-up line.
    pub fn listen_addr(&self) -> SocketAddr {
        let line = self.wait_for("ImageSwap is serving.");
        line["listen"]
            .as_str()
            .expect("listen field")
            .parse()
            .expect("address")
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// The exit code once the process has exited; panics if it still runs
    /// after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        let child = &mut self.child;
        let mut code = None;
        let exited = super::eventually_blocking(within, || {
            code = child
                .try_wait()
                .expect("wait")
                .map(|status| status.code().unwrap_or(-1));
            code.is_some()
        });
        assert!(exited, "still running after {within:?}");
        code.unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A POST over plain HTTP/1.1 (`connection: close`): the whole response.
pub fn http_post(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\n\r\n",
        body.len()
    )
    .expect("write");
    stream.write_all(body).expect("body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

/// A GET over plain HTTP/1.1 (`connection: close`): the whole response.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}
