//! `imageswap swap` and `imageswap maps check` as a person runs them: the real
//! binary, real files, arguments, standard input, exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::support::binary::command as imageswap;

const SPEC_A: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/maps/spec-a.conf");

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imageswap");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("wait");
    writer.join().expect("writer thread").expect("write stdin");
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn json_output_for_arguments() {
    let output = imageswap()
        .args([
            "swap",
            "--maps",
            SPEC_A,
            "--output",
            "json",
            "alpine",
            "cool.io:443/a",
            "gcr.io/",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let lines = json_lines(&output);
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"image": "alpine", "result": "my.example.com/mirror-docker.io/alpine", "changed": true, "rule": "registry", "key": "docker.io"}),
            serde_json::json!({"image": "cool.io:443/a", "result": "cool.io:443/a", "changed": false, "rule": "registry", "key": "cool.io"}),
            serde_json::json!({"image": "gcr.io/", "result": "gcr.io/", "changed": false, "rule": "invalid", "key": null,
                "reason": "nothing follows the registry `gcr.io/`"}),
        ]
    );
}

/// The four kinds of input where the parser disagreed with the
/// distribution library (issue 25): each is left alone with the reason a
/// node would give, and the path limit no longer refuses a long registry.
#[test]
fn swap_gives_the_library_s_reason_for_each_reference_it_refuses() {
    let hex = "0123456789abcdef".repeat(4);
    let long_path = format!("example.com/{}:tag", "a".repeat(255));
    let images = [
        format!("repo@sha256:{}", &hex[..34]),
        format!("validname@invaliddigest:{hex}"),
        hex.clone(),
        long_path.clone(),
    ];
    let output = imageswap()
        .args(["swap", "--maps", SPEC_A, "--output", "json"])
        .args(&images)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let lines = json_lines(&output);
    let reasons: Vec<_> = lines
        .iter()
        .map(|l| (l["rule"].as_str(), l["reason"].as_str()))
        .collect();
    assert_eq!(
        reasons[..3],
        [
            (Some("invalid"), Some("digest sha256 needs 64 hex digits, got 34")),
            (
                Some("invalid"),
                Some("unknown digest algorithm `invaliddigest`; a node knows only sha256, sha384, sha512")
            ),
            (
                Some("invalid"),
                Some("64 hex digits are an image ID, not an image name (a node refuses it)")
            ),
        ]
    );
    // Valid since the library's v0.6: the limit is on the path, not the
    // registry; the SPEC_A maps file's default rule swaps it.
    assert_ne!(lines[3]["rule"], "invalid", "{}", lines[3]);
    assert_eq!(lines[3]["changed"], true, "{}", lines[3]);
}

#[test]
fn pull_secrets_are_named_for_the_image_the_pod_runs() {
    let output = imageswap()
        .args([
            "swap",
            "--maps",
            SPEC_A,
            "--image-pull-secrets",
            "my.example.com=mirror-pull,cool.io:443=cool-pull",
            "--output",
            "json",
            "alpine",
            "cool.io:443/a",
            "quay.io/solo/gloo:v1.0",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let secrets: Vec<serde_json::Value> = json_lines(&output)
        .into_iter()
        .map(|line| line["pull_secret"].clone())
        .collect();
    // Swapped into my.example.com; unswapped but already in cool.io:443;
    // swapped into a registry without a secret.
    assert_eq!(
        secrets,
        vec![
            serde_json::json!("mirror-pull"),
            serde_json::json!("cool-pull"),
            serde_json::Value::Null
        ]
    );

    let text = imageswap()
        .args(["swap", "--maps", SPEC_A, "alpine", "quay.io/solo/gloo:v1.0"])
        .env("IMAGESWAP_IMAGE_PULL_SECRETS", "my.example.com=mirror-pull")
        .output()
        .unwrap();
    assert!(text.status.success(), "{text:?}");
    let text = stdout(&text);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("pull secret: mirror-pull"), "{text}");
    assert!(lines[1].ends_with("pull secret: -"), "{text}");
}

#[test]
fn text_output_is_aligned() {
    let output = imageswap()
        .args([
            "swap",
            "--maps",
            SPEC_A,
            "alpine",
            "quay.io/solo/gloo:v1.0",
            "harbor.twr.io/x",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    // The result column starts at the same place on every line.
    let starts: Vec<usize> = [
        "my.example.com/mirror-docker.io/alpine",
        "quay.example3.com/solo/gloo:v1.0",
        "(unchanged)",
    ]
    .iter()
    .zip(&lines)
    .map(|(result, line)| line.find(result).expect("result on the line"))
    .collect();
    assert!(starts.iter().all(|&s| s == starts[0]), "{text}");
    assert!(lines[0].trim_end().ends_with("registry  docker.io"), "{text}");
    assert!(lines[2].trim_end().ends_with("wildcard  twr.io"), "{text}");
}

#[test]
fn stdin_lines_exactly_as_written() {
    let input = b"alpine\n\n nginx\nquay.io/a/b\r\nquay.io/a/b";
    let output = run_with_stdin(
        imageswap().args(["swap", "--maps", SPEC_A, "--output", "json"]),
        input,
    );
    assert!(output.status.success());
    let lines = json_lines(&output);
    let images: Vec<&str> = lines.iter().map(|l| l["image"].as_str().unwrap()).collect();
    // The empty line is skipped; nothing is trimmed (so " nginx" and the CR line are invalid).
    assert_eq!(images, ["alpine", " nginx", "quay.io/a/b\r", "quay.io/a/b"]);
    let rules: Vec<&str> = lines.iter().map(|l| l["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["registry", "invalid", "invalid", "registry"]);
}

#[test]
fn streams_a_hundred_thousand_lines() {
    let input: String = (0..100_000)
        .map(|i| format!("team{}/app:{}\n", i % 97, i))
        .collect();
    let output = run_with_stdin(
        imageswap().args(["swap", "--maps", SPEC_A, "--output", "json"]),
        input.as_bytes(),
    );
    assert!(output.status.success());
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 100_000);
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["result"], "my.example.com/mirror-docker.io/team89/app:99999");
}

#[test]
fn environment_variables_are_the_defaults() {
    let output = imageswap()
        .env("IMAGESWAP_MAPS_FILE", SPEC_A)
        .args(["swap", "--output", "json", "alpine"])
        .output()
        .unwrap();
    assert_eq!(json_lines(&output)[0]["rule"], "registry");

    let output = imageswap()
        .env("IMAGESWAP_MODE", "LEGACY")
        .env("IMAGE_PREFIX", "legacy.example.com")
        .args(["swap", "--output", "json", "gcr.io/team/app:1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let line = &json_lines(&output)[0];
    assert_eq!(
        (line["result"].as_str(), line["rule"].as_str()),
        (Some("legacy.example.com/app:1"), Some("legacy"))
    );

    // Flags beat the environment.
    let output = imageswap()
        .env("IMAGESWAP_MODE", "LEGACY")
        .args([
            "swap", "--mode", "maps", "--maps", SPEC_A, "--output", "json", "alpine",
        ])
        .output()
        .unwrap();
    assert_eq!(json_lines(&output)[0]["rule"], "registry");
}

#[test]
fn unreadable_maps_file_is_a_usage_error() {
    // `swap` and `maps match-conditions` alike: one line, exit 2.
    for args in [
        &["swap", "--maps", "/nonexistent/maps.conf", "alpine"][..],
        &["maps", "match-conditions", "--maps", "/nonexistent/maps.conf"],
    ] {
        let output = imageswap().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("imageswap: cannot read maps file /nonexistent/maps.conf"),
            "{stderr}"
        );
    }
}

#[test]
fn non_utf8_maps_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maps.conf");
    std::fs::write(&path, b"default::\xff\n").unwrap();
    let output = imageswap()
        .args(["swap", "--maps"])
        .arg(&path)
        .arg("alpine")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not UTF-8"));
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        vec!["swap", "--mode", "bogus", "alpine"],
        vec!["swap", "--output", "yaml", "alpine"],
        vec!["swap", "--no-such-flag"],
    ] {
        let output = imageswap().args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
    let output = imageswap()
        .env("IMAGESWAP_MODE", "sideways")
        .args(["swap", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("sideways"));
}

// ---------------------------------------------------------------- maps check

fn check(contents: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maps.conf");
    std::fs::write(&path, contents).unwrap();
    let output = imageswap().args(["maps", "check"]).arg(&path).output().unwrap();
    let text = stdout(&output).replace(&path.display().to_string(), "maps.conf");
    (output.status.code(), text)
}

#[test]
fn maps_check_clean_file() {
    // Idempotent too: what docker.io swaps to is left alone (`hub.io::`).
    let (code, text) = check("default::d.io\ndocker.io::hub.io\nhub.io::\n");
    assert_eq!((code, text.as_str()), (Some(0), "maps.conf: ok\n"));
}

#[test]
fn maps_check_warnings_only_exit_zero() {
    let (code, text) = check(
        "default::d.io\n\
         quay.io:q.io\n\
         docker.io::a.io\n\
         docker.io::b.io\n\
         noswap_wildcards::a.io,,b.io\n\
         gcr.io::mirror. example\n\
         q.io::\n\
         mirror.example::\n",
    );
    assert_eq!(code, Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("maps.conf:2: warning: the single `:` separator is deprecated"));
    assert!(
        lines[1].starts_with("maps.conf:4: warning: key `docker.io` repeats line 3; this line's value wins")
    );
    assert!(lines[2].starts_with("maps.conf:5: warning: empty pattern in noswap_wildcards"));
    assert!(lines[3].starts_with("maps.conf:6: warning: spaces or tabs inside `mirror. example`"));
}

#[test]
fn maps_check_errors_exit_one() {
    let (code, text) = check("docker.io::hub.io\nbroken line\nregistry:5000:mirror\n[REPLACE]a[b-a]::x\n");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("maps.conf:2: error: invalid rule `broken line` skipped"),
        "{text}"
    );
    assert!(
        text.contains("maps.conf:3: error:") && text.contains("requires the `::` separator"),
        "{text}"
    );
    // A reversed range is not an error: as in the shell, it matches nothing
    // (the rest of its class still matches); maps check says so.
    assert!(
        text.contains("maps.conf:4: warning: `[REPLACE]a[b-a]`: the range `b-a` is reversed"),
        "{text}"
    );
    assert!(text.contains("maps.conf: error: no `default` key"), "{text}");
}

#[test]
fn maps_check_unreadable_file_exit_two() {
    let output = imageswap()
        .args(["maps", "check", "/nonexistent.conf"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&output.stderr).lines().count(), 1);
}

#[test]
fn maps_check_warns_when_a_swapped_image_is_swapped_again() {
    // The issue's case: the default with a path swaps its own output again.
    let (code, text) = check("default::harbor.example.com/proj\n[REPLACE]ghcr.io/{a,b}/*::x.example\n");
    assert_eq!(code, Some(0), "warnings only: {text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("maps.conf:1: warning: not idempotent: `default`"),
        "{text}"
    );
    assert!(
        lines[0].contains("harbor.example.com/proj/proj/"),
        "names the doubled result: {text}"
    );
    assert!(
        lines[1].starts_with("maps.conf:2: warning: `[REPLACE]ghcr.io/{a,b}/*` cannot match"),
        "{text}"
    );
}

#[test]
fn stdin_answers_each_line_as_soon_as_it_arrives() {
    use std::io::{BufRead, BufReader, Write};
    let mut child = imageswap()
        .args(["swap", "--maps", SPEC_A])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // The answer to the first line arrives while stdin is still open: the
    // output is not held back for a block of 4096 lines or for EOF.
    stdin.write_all(b"alpine\n").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("alpine  my.example.com/mirror-docker.io/alpine"),
        "{line}"
    );
    stdin.write_all(b"Alpine\n").unwrap();
    drop(stdin);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.contains("invalid") && line.contains("lower case"),
        "the reason: {line}"
    );
    assert!(child.wait().unwrap().success());
}

/// issue 21: `imageswap swap` shows the verdict of a rule whose result is
/// invalid (`invalid-result`, the rule, the result and why) and of a
/// placeholder (`kept-placeholder`); `--keep-images ''` keeps none.
#[test]
fn swap_shows_invalid_results_and_placeholders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let maps = dir.path().join("maps.conf");
    std::fs::write(
        &maps,
        "default::harbor.example.com\nquay.io::harbor.corp.example:8443/quay\n",
    )
    .expect("write");
    let maps = maps.display().to_string();
    let run = |extra: &[&str]| {
        let output = imageswap()
            .args(["swap", "--maps", &maps, "--output", "json"])
            .args(extra)
            .args(["quay.io:443/prometheus/x", "auto"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        json_lines(&output)
    };
    let lines = run(&[]);
    assert_eq!(lines[0]["rule"], "invalid-result", "{}", lines[0]);
    assert_eq!(lines[0]["changed"], false);
    assert_eq!(lines[0]["key"], "quay.io");
    let reason = lines[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(
            "rule quay.io gives an invalid image \"harbor.corp.example:8443/quay:443/prometheus/x\": "
        ),
        "{reason}"
    );
    assert_eq!(
        (&lines[1]["rule"], &lines[1]["changed"], &lines[1]["key"]),
        (
            &serde_json::json!("kept-placeholder"),
            &serde_json::json!(false),
            &serde_json::json!("auto")
        )
    );
    let none_kept = run(&["--keep-images", ""]);
    assert_eq!(
        none_kept[1]["result"], "harbor.example.com/auto",
        "{}",
        none_kept[1]
    );
}

/// issue 21 item 2: `maps check` exits 1 on a value that would give
/// invalid images (each finding names its line), and `--output json` gives
/// CI one document with the counts.
#[test]
fn maps_check_fails_on_values_that_give_invalid_images() {
    let (code, text) =
        check("default::harbor.example.com\nquay.io::http://mirror.example.com\n[EXACT]Nginx:1::x\n");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.lines().any(|l| l
            .starts_with("maps.conf:2: error: the value `http://mirror.example.com` gives invalid images")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("maps.conf:3: warning: [EXACT] key `Nginx:1`")),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maps.conf");
    std::fs::write(
        &path,
        "default::harbor.example.com\nquay.io::mirror.example.com/Team\n",
    )
    .unwrap();
    let output = imageswap()
        .args(["maps", "check", "--output", "json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(
        (report["errors"].as_u64(), report["warnings"].as_u64()),
        (Some(1), Some(0)),
        "{report}"
    );
    assert_eq!(report["findings"][0]["line"], 2);
    assert_eq!(report["findings"][0]["kind"], "invalid-result");
    // Warnings only: exit 0, also in JSON.
    std::fs::write(&path, "default::harbor.example.com\n[EXACT]Nginx:1::x\n").unwrap();
    let output = imageswap()
        .args(["maps", "check", "--output", "json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        (report["errors"].as_u64(), report["warnings"].as_u64()),
        (Some(0), Some(1)),
        "{report}"
    );
}

#[test]
fn match_conditions_print_the_generated_list_as_json_and_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maps.conf");
    std::fs::write(&path, "default::mirror.example\nmirror.example::\n").unwrap();
    let json = imageswap()
        .args(["maps", "match-conditions", "--output", "json", "--maps"])
        .arg(&path)
        .env("IMAGESWAP_IMAGE_PULL_SECRETS", "mirror.example=mirror-pull")
        .env("IMAGESWAP_DISABLE_LABEL", "example.com/swap")
        .output()
        .unwrap();
    assert_eq!(
        json.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    let names: Vec<&str> = list.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "imageswap-not-disabled",
            "imageswap-update-changes-images",
            "imageswap-images-may-change"
        ]
    );
    assert!(list.iter().all(|c| c.as_object().unwrap().len() == 2), "{list:?}");
    assert!(
        list[0]["expression"]
            .as_str()
            .unwrap()
            .contains("'example.com/swap'")
    );
    let images = list[2]["expression"].as_str().unwrap();
    assert!(
        images.contains("['mirror.example/'].exists(p, c.image.startsWith(p))"),
        "{images}"
    );
    assert!(images.contains("s.name == 'mirror-pull'"), "{images}");

    // YAML: the same list under `matchConditions:`, as a webhook takes it.
    let yaml = imageswap()
        .args(["maps", "match-conditions", "--maps"])
        .arg(&path)
        .env("IMAGESWAP_IMAGE_PULL_SECRETS", "mirror.example=mirror-pull")
        .env("IMAGESWAP_DISABLE_LABEL", "example.com/swap")
        .output()
        .unwrap();
    assert_eq!(yaml.status.code(), Some(0));
    let parsed: serde_json::Value = serde_saphyr::from_str(&stdout(&yaml)).unwrap();
    assert_eq!(parsed["matchConditions"], serde_json::Value::Array(list));
}
