//! Start-up errors of the real binary, as an operator meets them: every
//! refused setting (clap's parse, the cross-setting checks, a file a setting
//! names) is one line on stderr with one prefix, `imageswap: `, and exit 2;
//! the line names the setting the way it was given. And a request body that
//! is not JSON is answered in words.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::binary::{Running, command, http_post};
use crate::support::{eventually_blocking, fixtures_maps};

/// A refused start is over at once; a start that is not refused would
/// serve until killed, so the test gives up after this.
const REFUSED_WITHIN: Duration = Duration::from_secs(15);

/// Runs `command` to its exit (killed and reported if it is still running
/// after [`REFUSED_WITHIN`]: a setting that should be refused was not).
fn run_to_exit(mut command: Command, what: &str) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start imageswap");
    let exited = eventually_blocking(REFUSED_WITHIN, || child.try_wait().expect("wait").is_some());
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        panic!("{what}: still running after {REFUSED_WITHIN:?}, not refused: {stderr}");
    }
    child.wait_with_output().expect("output")
}

/// One refused start: exit 2, nothing on stdout, exactly one line on
/// stderr, starting with the one prefix; returns that line.
fn refused<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], env: &[(&str, &str)]) -> String {
    let what = format!("{args:?} {env:?}");
    let mut imageswap = command();
    imageswap.args(args).envs(env.iter().copied());
    let output = run_to_exit(imageswap, &what);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "{what}: stdout {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
    assert!(stderr.starts_with("imageswap: "), "{what}: one prefix: {stderr}");
    stderr.trim_end().to_owned()
}

fn maps_arg() -> String {
    fixtures_maps().display().to_string()
}

/// The arguments of `serve` on a free loopback port over plain HTTP with
/// the fixture maps (a start that is not refused serves), then `extra`.
fn serve_args(extra: &[&str]) -> Vec<String> {
    let maps = maps_arg();
    [
        "serve",
        "--insecure-http",
        "--listen",
        "127.0.0.1:0",
        "--maps",
        &maps,
    ]
    .iter()
    .chain(extra)
    .map(|a| (*a).to_owned())
    .collect()
}

#[test]
fn verify_timeout_must_be_below_request_timeout() {
    let line = refused(
        &serve_args(&[
            "--verify",
            "on",
            "--verify-timeout",
            "2s",
            "--request-timeout",
            "2s",
        ]),
        &[],
    );
    assert!(line.contains("--verify-timeout"), "{line}");
    assert!(line.contains("--request-timeout"), "{line}");
    assert!(line.contains("2s"), "{line}");
    // From the environment, as the ConfigMap sets them.
    let line = refused(
        &serve_args(&[]),
        &[
            ("IMAGESWAP_VERIFY", "on"),
            ("IMAGESWAP_VERIFY_TIMEOUT", "3s"),
            ("IMAGESWAP_REQUEST_TIMEOUT", "2s"),
        ],
    );
    assert!(line.contains("IMAGESWAP_VERIFY_TIMEOUT"), "{line}");
}

#[test]
fn request_timeout_must_be_below_the_webhooks_timeout() {
    // The manifests' webhook waits 5 s: the default of --webhook-timeout.
    let line = refused(&serve_args(&["--request-timeout", "6s"]), &[]);
    assert!(line.contains("--request-timeout"), "{line}");
    assert!(
        line.contains("IMAGESWAP_WEBHOOK_TIMEOUT"),
        "says how to change it: {line}"
    );
    assert!(line.contains("5s"), "{line}");
    // A webhook that waits longer allows a longer request timeout.
    let longer = serve_args(&["--request-timeout", "6s", "--webhook-timeout", "10s"]);
    let longer: Vec<&str> = longer[1..].iter().map(String::as_str).collect();
    let mut server = Running::start(&longer);
    server.listen_addr();
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), 0);
    // The API server allows 1 to 30 seconds.
    let line = refused(&serve_args(&["--webhook-timeout", "31s"]), &[]);
    assert!(line.contains("--webhook-timeout"), "{line}");
}

#[test]
fn a_plain_http_registry_is_a_host_and_port_only() {
    let line = refused(
        &[
            "serve",
            "--registry-plain-http",
            "registry.local:5000,http://reg:5000/path",
        ],
        &[],
    );
    assert!(line.contains("--registry-plain-http"), "{line}");
    assert!(line.contains("http://reg:5000/path"), "{line}");
    assert!(line.contains("host[:port]"), "{line}");
    // `swap` reads the same setting.
    let line = refused(&["swap", "--registry-plain-http", "reg:5000/v2", "nginx"], &[]);
    assert!(line.contains("reg:5000/v2"), "{line}");
}

#[test]
fn an_unreadable_registry_ca_is_a_bad_setting_named_once() {
    let line = refused(
        &serve_args(&["--verify", "on", "--registry-ca", "/nonexistent/ca.pem"]),
        &[],
    );
    assert!(line.contains("--registry-ca"), "{line}");
    assert!(line.contains("/nonexistent/ca.pem"), "{line}");
    assert_eq!(line.matches("No such file").count(), 1, "the cause once: {line}");
}

#[test]
fn a_conflict_names_the_setting_as_it_was_given() {
    let line = refused(&["serve", "--max-body-bytes", "100000000"], &[]);
    assert!(line.contains("--max-body-bytes"), "{line}");
    assert!(line.contains("100000000"), "{line}");
    let line = refused(&["serve"], &[("IMAGESWAP_MAX_BODY_BYTES", "100000000")]);
    assert!(line.contains("IMAGESWAP_MAX_BODY_BYTES"), "{line}");
    // The budget, when it is the one given, is the one named.
    let line = refused(&["serve", "--memory-budget-bytes", "2048"], &[]);
    assert!(line.contains("--memory-budget-bytes"), "{line}");
}

#[test]
fn every_start_up_error_has_one_prefix_and_exit_2() {
    // clap's parse (a value, then an unknown argument), serve's checks,
    // init's checks, swap's maps file.
    let line = refused(&["serve", "--request-timeout", "soon"], &[]);
    assert!(
        line.contains("IMAGESWAP_REQUEST_TIMEOUT (--request-timeout)"),
        "{line}"
    );
    refused(&["serve"], &[("IMAGESWAP_MAX_CONCURRENCY", "0")]);
    refused(&["init"], &[("IMAGESWAP_WATCH_LISTEN", "nowhere")]);
    refused(&["init", "--tls-dir", ""], &[]);
    refused(&["swap", "--maps", "/nonexistent/maps.conf", "nginx"], &[]);
}

#[test]
fn an_unknown_argument_gets_a_usable_usage_line() {
    for (args, usage) in [
        (&["serve", "--bogus"][..], "imageswap serve [OPTIONS]"),
        (&["swap", "--bogus"][..], "imageswap swap [OPTIONS] [IMAGES]..."),
        (&["--bogus"][..], "imageswap [OPTIONS] <COMMAND>"),
        (&["serv"][..], "imageswap [OPTIONS] <COMMAND>"),
    ] {
        let line = refused(args, &[]);
        assert!(line.contains(args[args.len() - 1]), "{line}");
        assert!(line.contains(&format!("usage: {usage}")), "{line}");
        // Where the list of settings is.
        assert!(line.contains("--help"), "{line}");
    }
    // A near miss is named.
    let line = refused(&["serve", "--request-timout", "2s"], &[]);
    assert!(line.contains("--request-timeout"), "{line}");
}

#[test]
fn a_body_that_is_not_json_is_answered_in_words() {
    let maps = maps_arg();
    let mut server = Running::start(&["--insecure-http", "--listen", "127.0.0.1:0", "--maps", &maps]);
    let addr = server.listen_addr();
    for (body, words) in [
        (&b"nonsense"[..], "not JSON: "),
        (&b""[..], "not JSON: the body is empty"),
        (&b"{\"apiVersion\": "[..], "not JSON: "),
        (&b"{\"a\":1} trailing"[..], "not JSON: "),
    ] {
        let response = http_post(addr, "/mutate", "", body);
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        let text = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(
            text.contains(words),
            "{:?}: {text}",
            String::from_utf8_lossy(body)
        );
        // Words, not simd-json's error names.
        for name in ["ExpectedNull", "Eof", "TrailingData", "at character"] {
            assert!(
                !text.contains(name),
                "{:?}: {text}",
                String::from_utf8_lossy(body)
            );
        }
    }
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), 0);
}
