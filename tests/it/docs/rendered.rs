//! What the docs say about the manifests, checked on what kustomize renders:
//! operations.md's "did every replica load the new maps file?" command, run
//! as written on the rendered ConfigMap, prints the hash the server reports
//! for that file; migrating.md's upgrade overlay swaps as the original did
//! (verification off), as its text says; every "update the maps ConfigMap"
//! command makes the object the base renders (its key and its labels).

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
    kustomize("deploy/manifests")
}

/// `kubectl kustomize DIR` (a directory of this repository).
fn kustomize(dir: &str) -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo_path(dir))
        .output()
        .expect("kubectl is on PATH (scripts/check-deploy needs it too)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
    let key = volume["configMap"]["items"][0]["key"]
        .as_str()
        .expect("the mounted key");
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
    assert_eq!(server.wait_exit(std::time::Duration::from_secs(5)), 0);
}

/// migrating.md step 2's overlay (`my-imageswap/kustomization.yaml`): what
/// it builds on, as a directory of this repository.
fn upgrade_overlay_resource(doc: &str) -> String {
    let start = doc
        .find("# my-imageswap/kustomization.yaml")
        .expect("migrating.md's upgrade overlay");
    let block = &doc[start..start + doc[start..].find("```").expect("the block's end")];
    let block: String = block
        .lines()
        .map(|l| l.trim_start())
        .collect::<Vec<_>>()
        .join("\n");
    let kustomization: Value = serde_saphyr::from_str(&block).expect("the overlay is YAML");
    let resource = kustomization["resources"][0].as_str().expect("one resource");
    resource
        .strip_prefix("../imageswap/")
        .unwrap_or_else(|| panic!("a path in this repository: {resource}"))
        .to_owned()
}

#[test]
fn the_upgrade_overlay_of_migrating_md_swaps_as_the_original_did() {
    let doc = read("docs/migrating.md");
    assert!(
        doc.contains("swaps exactly as before"),
        "migrating.md no longer promises the original's swaps: update this test"
    );
    let resource = upgrade_overlay_resource(&doc);
    let objects = kustomize(&resource);
    let env = &find(&objects, "ConfigMap", "imageswap-env")["data"];
    // The program's default is off too: absent counts as off.
    let verify = env["IMAGESWAP_VERIFY"].as_str().unwrap_or("off");
    assert_eq!(
        verify, "off",
        "migrating.md's upgrade builds on {resource}, which turns mirror verification on: not the original's swaps"
    );
}

/// Every shell command of `doc` that mentions `needle`, its `\\` line
/// continuations joined.
fn commands_with(doc: &str, needle: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in doc.lines() {
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                if current.contains(needle) {
                    commands.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                current.clear();
            }
        }
    }
    commands
}

#[test]
fn every_maps_configmap_update_keeps_the_key_and_labels_of_the_base() {
    let objects = rendered_base();
    let base = find(&objects, "ConfigMap", "imageswap-maps");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo_path("examples/imageswap-maps.conf"),
        dir.path().join("imageswap-maps.conf"),
    )
    .expect("a maps file");
    let mut checked = 0;
    for doc in ["README.md", "docs/quick-start.md", "docs/maps.md"] {
        let commands = commands_with(&read(doc), "create configmap imageswap-maps");
        assert!(!commands.is_empty(), "{doc}: no maps ConfigMap update found");
        for command in commands {
            let offline = command
                .strip_suffix("| kubectl apply -f -")
                .unwrap_or_else(|| panic!("{doc}: the update applies what it makes: {command}"));
            // Run up to the apply (offline: `--dry-run=client`, `--local`).
            let output = Command::new("sh")
                .args(["-c", offline])
                .current_dir(dir.path())
                .output()
                .expect("sh");
            assert!(
                output.status.success(),
                "{doc}: {command}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let made: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&output.stdout)).expect("YAML");
            for field in ["name", "namespace", "labels"] {
                assert_eq!(
                    made["metadata"][field], base["metadata"][field],
                    "{doc}: `{command}` makes another {field} than the base's ConfigMap (apply would drop its labels)"
                );
            }
            let keys = |v: &Value| {
                v["data"]
                    .as_object()
                    .map(|d| d.keys().cloned().collect::<Vec<_>>())
            };
            assert_eq!(keys(&made), keys(base), "{doc}: {command}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked}");
}
