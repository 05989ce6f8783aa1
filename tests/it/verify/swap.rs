//! `imageswap swap --verify on` as a person runs it before turning
//! verification on: the real binary against the real registry (TLS with
//! the extra CA), text and JSON, with a line per image saying what the
//! check found and what the pod would finally run.

use super::Setup;
use crate::support::binary::command as imageswap;
use crate::support::registry::Auth;

/// A maps file sending quay.io to `host` and ghcr.io to a port where
/// nothing listens (bound, then closed).
fn maps_with_a_dead_registry(s: &Setup, host: &str) -> (std::path::PathBuf, std::net::SocketAddr) {
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let maps = s.dir.path().join("maps.conf");
    std::fs::write(
        &maps,
        format!("default::\nquay.io::{host}/quay\nghcr.io::{down}/ghcr\n"),
    )
    .unwrap();
    (maps, down)
}

#[test]
fn swap_verify_says_what_each_swapped_image_finds_and_what_runs() {
    let s = Setup::new();
    s.open.push_image("quay/team/app", "1");
    let tls = s.tls(Auth::None);
    let host = tls.host();
    let (maps, down) = maps_with_a_dead_registry(&s, &host);
    let run = |output: &str| {
        let out = imageswap()
            .args(["swap", "--maps"])
            .arg(&maps)
            .args(["--verify", "on", "--verify-on-error", "keep", "--registry-ca"])
            .arg(&s.ca_path)
            .args(["--registry-config"])
            .arg(s.config_path())
            .args(["--registry-plain-http", &down.to_string(), "--output", output])
            .args([
                "quay.io/team/app:1",
                "quay.io/team/gone:1",
                "ghcr.io/x/y:1",
                "nginx:1",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };

    let text = run("text");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].ends_with(&format!("verified: present  final: {host}/quay/team/app:1")),
        "{text}"
    );
    assert!(
        lines[1].ends_with("verified: missing  final: quay.io/team/gone:1"),
        "{text}"
    );
    assert!(lines[2].contains("verified: error: cannot connect"), "{text}");
    assert!(
        lines[2].ends_with("final: ghcr.io/x/y:1"),
        "on error keep: {text}"
    );
    assert!(
        lines[3].ends_with("verified: -  final: nginx:1"),
        "not swapped, not checked: {text}"
    );

    let json: Vec<serde_json::Value> = run("json")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json[0]["verified"], "present");
    assert_eq!(json[0]["final"], format!("{host}/quay/team/app:1"));
    assert_eq!(json[1]["verified"], "missing");
    assert_eq!(json[1]["final"], "quay.io/team/gone:1");
    assert!(
        json[2]["verified"]
            .as_str()
            .unwrap()
            .starts_with("error: cannot connect"),
        "{:?}",
        json[2]
    );
    assert_eq!(json[3]["verified"], serde_json::Value::Null);
    assert_eq!(json[3]["final"], "nginx:1");
}

/// `--fail-on` gates a CI pipeline: exit 1 when an image of the kind named
/// is found (the lines are all written first), 0 otherwise; without it,
/// 0 as before whatever the checks found. Needs `--verify`.
#[test]
fn swap_verify_fail_on_exits_1_when_such_an_image_is_found() {
    let s = Setup::new();
    s.open.push_image("quay/team/app", "1");
    let host = s.open.host();
    let (maps, down) = maps_with_a_dead_registry(&s, &host);
    let run = |extra: &[&str], images: &[&str]| {
        let out = imageswap()
            .args(["swap", "--maps"])
            .arg(&maps)
            .args(["--registry-config"])
            .arg(s.config_path())
            .args(["--registry-plain-http", &format!("{host},{down}")])
            .args(extra)
            .args(images)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let present = "quay.io/team/app:1";
    let missing = "quay.io/team/gone:1";
    let error = "ghcr.io/x/y:1";
    let verify = |fail_on: &str| ["--verify", "--fail-on", fail_on].map(str::to_owned);
    let code = |extra: &[String], images: &[&str]| {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = run(&extra, images);
        assert_eq!(
            stdout.lines().count(),
            images.len(),
            "every line is written: {stdout}{stderr}"
        );
        code
    };

    assert_eq!(code(&verify("missing"), &[present, missing]), Some(1));
    assert_eq!(
        code(&verify("missing"), &[present, error]),
        Some(0),
        "an error is not missing"
    );
    assert_eq!(code(&verify("error"), &[present, error]), Some(1));
    assert_eq!(code(&verify("error"), &[present, missing]), Some(0));
    assert_eq!(code(&verify("any"), &[missing]), Some(1));
    assert_eq!(code(&verify("any"), &[error]), Some(1));
    assert_eq!(code(&verify("any"), &[present, "nginx:1"]), Some(0));
    assert_eq!(
        code(
            &["--verify".to_owned(), "on".to_owned()],
            &[present, missing, error]
        ),
        Some(0),
        "without --fail-on: 0 as before"
    );
    // Without verification nothing is checked: the flag would never fire.
    let (code, _, stderr) = run(&["--fail-on", "missing"], &[present]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--fail-on") && stderr.contains("--verify"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
