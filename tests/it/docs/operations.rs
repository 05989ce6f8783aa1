//! The commands of docs/operations.md run against what they are about: the
//! "did every replica load the new maps file?" command, run as written on
//! the ConfigMap the kustomize base renders, prints the hash the server
//! reports for that file.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::binary::{Running, http_get};
use crate::support::{read, repo_path};

/// The command of operations.md that prints the maps file's hash: the
/// backticked `kubectl … | sha256sum` after "Did every replica load",
/// its line breaks undone.
fn maps_hash_command(doc: &str) -> String {
    let start = doc
        .find("Did every replica load")
        .expect("operations.md asks whether every replica loaded the maps");
    let rest = &doc[start..];
    let open = rest.find("`kubectl").expect("a kubectl command") + 1;
    let close = open + rest[open..].find('`').expect("the command's closing backtick");
    rest[open..close].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The rendered kustomize base (`kubectl kustomize deploy/manifests`).
fn rendered_base() -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo_path("deploy/manifests"))
        .output()
        .expect("kubectl is on PATH (scripts/check-deploy needs it too)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_saphyr::from_multiple::<Value>(&String::from_utf8_lossy(&output.stdout))
        .expect("YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} in the rendered base"))
}

#[test]
fn the_maps_hash_command_prints_the_hash_the_server_reports() {
    let command = maps_hash_command(&read("docs/operations.md"));
    let live = "kubectl -n imageswap-system get configmap imageswap-maps -o ";
    let pipeline = command
        .strip_prefix(live)
        .unwrap_or_else(|| panic!("the command reads the live ConfigMap imageswap-maps: {command}"));

    let objects = rendered_base();
    let dir = tempfile::tempdir().expect("tempdir");
    let configmap = dir.path().join("imageswap-maps.json");
    std::fs::write(
        &configmap,
        serde_json::to_vec(find(&objects, "ConfigMap", "imageswap-maps")).expect("JSON"),
    )
    .expect("write the ConfigMap");
    // The same command, run by kubectl on the rendered object instead of
    // the live one (`label --local` reads a file and prints it, offline).
    let offline = format!(
        "kubectl label --local -f '{}' docs-check=1 -o {pipeline}",
        configmap.display()
    );
    let output = Command::new("sh")
        .args(["-c", &offline])
        .stderr(Stdio::inherit())
        .output()
        .expect("sh");
    assert!(output.status.success(), "{offline}");
    let printed = String::from_utf8_lossy(&output.stdout);
    let documented = printed.split_whitespace().next().expect("a hash").to_owned();

    // The file the pods read: the key the Deployment mounts as the maps file.
    let deployment = find(&objects, "Deployment", "imageswap");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == "imageswap-maps")
        .expect("the maps volume");
    let key = volume["configMap"]["items"][0]["key"].as_str().expect("the mounted key");
    let data = find(&objects, "ConfigMap", "imageswap-maps")["data"][key]
        .as_str()
        .expect("the maps file in the ConfigMap");
    let maps = dir.path().join("imageswap-maps.conf");
    std::fs::write(&maps, data).expect("write the maps file");
    let maps = maps.display().to_string();
    let mut server = Running::start(&["--insecure-http", "--listen", "127.0.0.1:0", "--maps", &maps]);
    let addr = server.listen_addr();
    server.wait_for("Maps loaded.");
    let metrics = http_get(addr, "/metrics");
    let reported = metrics
        .lines()
        .find_map(|l| l.strip_prefix("imageswap_maps_loaded_timestamp_seconds{sha256=\""))
        .and_then(|rest| rest.split('"').next())
        .expect("the maps hash metric");
    assert_eq!(
        documented, reported,
        "operations.md's command ({command}) prints another hash than the server reports"
    );
    server.signal("TERM");
}
