//! The manifests and the program agree: every variable the `imageswap-env`
//! ConfigMap (base and overlays) or a container sets is one the program reads,
//! every value parses as the program parses it, the containers run the
//! subcommands that exist, and every mount path is where the program looks by
//! default. The rendered base is `deploy/install.yaml` (kept current by
//! `scripts/check-deploy`); the overlays' ConfigMap patches are read as
//! written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{ArgAction, CommandFactory};
use imageswap::cli::Cli;
use serde_json::Value;

use crate::support::{read, repo_path};

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("valid YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn install() -> Vec<Value> {
    yaml_documents(&read("deploy/install.yaml"))
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} in install.yaml"))
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The `imageswap-env` data of the base, then of each overlay (base merged
/// with the overlay's ConfigMap patch, as kustomize merges it).
fn env_configs() -> Vec<(String, BTreeMap<String, String>)> {
    let base = string_map(&object(&install(), "ConfigMap", "imageswap-env")["data"]);
    let mut configs = vec![("base".to_owned(), base.clone())];
    let overlays = repo_path("deploy/overlays");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&overlays)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    // The tracing example is an overlay too.
    names.push(repo_path("deploy/observability/jaeger"));
    for overlay in names {
        let mut merged = base.clone();
        for entry in std::fs::read_dir(&overlay).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in yaml_documents(&text) {
                if doc["kind"] == "ConfigMap" && doc["metadata"]["name"] == "imageswap-env" {
                    merged.extend(string_map(&doc["data"]));
                }
            }
        }
        configs.push((
            overlay.file_name().unwrap().to_string_lossy().into_owned(),
            merged,
        ));
    }
    assert!(configs.len() >= 4, "base and the three overlays");
    configs
}

/// What one subcommand reads from the environment: variable → (long flag,
/// takes a value, default).
#[derive(Debug)]
struct EnvArg {
    long: String,
    takes_value: bool,
    default: Option<String>,
}

fn env_args(subcommand: &str) -> BTreeMap<String, EnvArg> {
    let cli = Cli::command();
    let sub = cli
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("no `{subcommand}` subcommand"));
    cli.get_arguments()
        .chain(sub.get_arguments())
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let takes_value = !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
            let default = arg
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned());
            Some((
                env,
                EnvArg {
                    long: arg.get_long()?.to_owned(),
                    takes_value,
                    default,
                },
            ))
        })
        .collect()
}

fn containers(deployment: &Value) -> Vec<&Value> {
    let spec = &deployment["spec"]["template"]["spec"];
    let mut all: Vec<&Value> = spec["initContainers"].as_array().into_iter().flatten().collect();
    all.extend(spec["containers"].as_array().into_iter().flatten());
    all
}

fn subcommand_of(container: &Value) -> String {
    let args = container["args"].as_array().expect("args");
    // One subcommand, settings through the environment; only the role of
    // the container (`init --watch`, the sidecar) is a flag.
    let flags: Vec<&str> = args[1..].iter().filter_map(Value::as_str).collect();
    assert!(
        !args.is_empty() && (flags.is_empty() || (args[0] == "init" && flags == ["--watch"])),
        "one subcommand, settings through the environment: {container}"
    );
    args[0].as_str().unwrap().to_owned()
}

/// Turns environment settings into the equivalent command line and parses
/// it with the program's own parser, so values are checked as at start.
fn parse_as_program(subcommand: &str, env: &BTreeMap<String, String>) -> Result<(), String> {
    let known = env_args(subcommand);
    let mut argv = vec!["imageswap".to_owned(), subcommand.to_owned()];
    for (name, value) in env {
        let Some(arg) = known.get(name) else { continue };
        if arg.takes_value {
            argv.push(format!("--{}={value}", arg.long));
        } else if ["true", "1", "yes", "on"].contains(&value.to_ascii_lowercase().as_str()) {
            argv.push(format!("--{}", arg.long));
        }
    }
    Cli::try_parse_from_argv(&argv)
}

trait TryParseArgv {
    fn try_parse_from_argv(argv: &[String]) -> Result<(), String>;
}

impl TryParseArgv for Cli {
    /// clap's parse, then the subcommand's typed settings with their checks
    /// across settings (the timeouts nest), as the program starts.
    fn try_parse_from_argv(argv: &[String]) -> Result<(), String> {
        use clap::Parser;
        use imageswap::cli::Command;
        let cli = Cli::try_parse_from(argv).map_err(|e| format!("{argv:?}: {e}"))?;
        let checked = match &cli.command {
            Command::Serve(args) => imageswap::config::ServeConfig::from_args(args)
                .map(drop)
                .map_err(|e| e.to_string()),
            Command::Init(args) => imageswap::init::InitSettings::from_args(args)
                .map(drop)
                .map_err(|e| e.to_string()),
            Command::Swap(_) | Command::Maps(_) => Ok(()),
        };
        checked.map_err(|e| format!("{argv:?}: {e}"))
    }
}

#[test]
fn every_configmap_variable_is_read_by_the_program() {
    let serve = env_args("serve");
    let init = env_args("init");
    for (name, config) in env_configs() {
        for key in config.keys() {
            assert!(
                serve.contains_key(key) || init.contains_key(key),
                "{name}: imageswap-env sets {key}, which neither `serve` nor `init` reads"
            );
        }
    }
}

#[test]
fn every_container_variable_is_read_by_its_subcommand() {
    let install = install();
    let deployment = object(&install, "Deployment", "imageswap");
    for container in containers(deployment) {
        let subcommand = subcommand_of(container);
        let known = env_args(&subcommand);
        for env in container["env"].as_array().into_iter().flatten() {
            let name = env["name"].as_str().unwrap();
            assert!(
                known.contains_key(name),
                "{} sets {name}, which `{subcommand}` does not read",
                container["name"]
            );
        }
        let sources: Vec<&str> = container["envFrom"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["configMapRef"]["name"].as_str())
            .collect();
        assert_eq!(sources, ["imageswap-env"], "{}", container["name"]);
    }
}

#[test]
fn every_value_parses_as_the_program_parses_it() {
    for (name, config) in env_configs() {
        for subcommand in ["serve", "init"] {
            parse_as_program(subcommand, &config).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    // The check can fail: a value the program refuses is caught, and so
    // are settings that contradict each other.
    let mut bad = env_configs().remove(0).1;
    bad.insert("IMAGESWAP_REQUEST_TIMEOUT".into(), "two seconds".into());
    assert!(parse_as_program("serve", &bad).is_err());
    bad.insert("IMAGESWAP_REQUEST_TIMEOUT".into(), "6s".into());
    assert!(parse_as_program("serve", &bad).is_err());
}

/// The server refuses a request timeout that is not below the webhook's
/// `timeoutSeconds`, which it reads from IMAGESWAP_WEBHOOK_TIMEOUT: the
/// variable and the webhook template say the same number, in the base and
/// every overlay (none patches the template's timeout).
#[test]
fn the_webhook_timeout_setting_is_the_templates_timeout_seconds() {
    let install = install();
    let template = object(&install, "ConfigMap", "imageswap-mwc-template");
    let text = template["data"]
        .as_object()
        .and_then(|d| d.values().next())
        .and_then(Value::as_str);
    let mwc = yaml_documents(text.expect("the template"));
    let webhooks = mwc[0]["webhooks"].as_array().expect("webhooks");
    let overlays_patch_it = std::fs::read_dir(repo_path("deploy/overlays"))
        .unwrap()
        .flat_map(|overlay| std::fs::read_dir(overlay.unwrap().path()).unwrap())
        .map(|file| file.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .flat_map(|path| yaml_documents(&std::fs::read_to_string(path).unwrap()))
        .any(|doc| doc["metadata"]["name"] == "imageswap-mwc-template");
    assert!(
        !overlays_patch_it,
        "an overlay changes the webhook template: compare its timeoutSeconds too"
    );
    for (name, config) in env_configs() {
        let setting = humantime::parse_duration(&config["IMAGESWAP_WEBHOOK_TIMEOUT"]).expect("a duration");
        for webhook in webhooks {
            let seconds = webhook["timeoutSeconds"].as_u64().expect("timeoutSeconds is set");
            assert_eq!(setting.as_secs(), seconds, "{name}: {}", webhook["name"]);
        }
    }
}

#[test]
fn containers_run_the_binary_the_image_installs() {
    let install = install();
    let deployment = object(&install, "Deployment", "imageswap");
    let dockerfile = read("Dockerfile");
    let mut subcommands = Vec::new();
    for container in containers(deployment) {
        let command = container["command"].as_array().expect("command");
        let binary = command[0].as_str().unwrap();
        assert!(
            dockerfile.contains(&format!("COPY --from=build /out/imageswap {binary}")),
            "{binary}"
        );
        subcommands.push(subcommand_of(container));
    }
    assert_eq!(subcommands, ["init", "serve"]);
}

/// The mount path holding `file` in `container`, with the volume's name.
fn mount_for<'a>(container: &'a Value, dir: &Path) -> Option<&'a Value> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == dir)
}

/// The effective path setting: the ConfigMap's value, else the program's default.
fn setting(config: &BTreeMap<String, String>, args: &BTreeMap<String, EnvArg>, name: &str) -> String {
    let default = args[name]
        .default
        .clone()
        .unwrap_or_else(|| panic!("{name} has a default"));
    let value = config.get(name).cloned().unwrap_or(default.clone());
    assert_eq!(value, default, "{name} differs from the program's default");
    value
}

#[test]
fn mount_paths_are_the_program_defaults() {
    let install = install();
    let deployment = object(&install, "Deployment", "imageswap");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    let (_, config) = env_configs().remove(0);
    let all = containers(deployment);
    let init = all.iter().find(|c| subcommand_of(c) == "init").unwrap();
    let serve = all.iter().find(|c| subcommand_of(c) == "serve").unwrap();
    let serve_args = env_args("serve");
    let init_args = env_args("init");

    // serve reads the pair init writes, from the same volume.
    let tls_dir = setting(&config, &init_args, "IMAGESWAP_TLS_DIR");
    let init_tls = mount_for(init, Path::new(&tls_dir)).expect("init mounts the TLS dir");
    assert_ne!(init_tls["readOnly"], true, "init writes the pair");
    for name in ["IMAGESWAP_TLS_CERT", "IMAGESWAP_TLS_KEY"] {
        let file = PathBuf::from(setting(&config, &serve_args, name));
        assert_eq!(file.parent().unwrap(), Path::new(&tls_dir), "{name}");
        let mount = mount_for(serve, file.parent().unwrap()).unwrap_or_else(|| panic!("serve mounts {name}"));
        assert_eq!(mount["name"], init_tls["name"], "{name}: the volume init writes");
    }

    // The maps ConfigMap is mounted as a directory (so its `..data` swap is
    // seen), with the file name the program reads.
    let maps = PathBuf::from(setting(&config, &serve_args, "IMAGESWAP_MAPS_FILE"));
    let mount = mount_for(serve, maps.parent().unwrap()).expect("serve mounts the maps directory");
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees ConfigMap updates"
    );
    let item = &volume(mount["name"].as_str().unwrap())["configMap"]["items"][0];
    assert_eq!(item["path"].as_str(), maps.file_name().unwrap().to_str());

    // The webhook template, likewise for init.
    let template = PathBuf::from(setting(&config, &init_args, "IMAGESWAP_MWC_TEMPLATE"));
    let mount = mount_for(init, template.parent().unwrap()).expect("init mounts the template directory");
    let item = &volume(mount["name"].as_str().unwrap())["configMap"]["items"][0];
    assert_eq!(item["path"].as_str(), template.file_name().unwrap().to_str());
}

#[test]
fn probes_and_ports_match_the_listen_address() {
    let install = install();
    let deployment = object(&install, "Deployment", "imageswap");
    let (_, config) = env_configs().remove(0);
    let listen: std::net::SocketAddr = config["IMAGESWAP_LISTEN"].parse().unwrap();
    let serve = containers(deployment)
        .into_iter()
        .find(|c| subcommand_of(c) == "serve")
        .unwrap();
    assert_eq!(serve["ports"][0]["containerPort"], listen.port());
    assert_eq!(serve["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(serve["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(serve["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
}

/// The verification settings of the program alone (`VerifyArgs`, which
/// `serve` and `swap` flatten), so the ConfigMaps' verify values are parsed
/// by the program's own parser.
#[derive(clap::Parser)]
struct VerifyOnly {
    #[command(flatten)]
    verify: imageswap::verify::VerifyArgs,
}

/// Parses the verify variables of `env` as the program does at start.
fn parse_verify(env: &BTreeMap<String, String>) -> Result<imageswap::verify::VerifyArgs, String> {
    use clap::Parser;
    let command = VerifyOnly::command();
    let mut argv = vec!["verify".to_owned()];
    for arg in command.get_arguments() {
        let (Some(name), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        if let Some(value) = env.get(name.to_str().unwrap()) {
            argv.push(format!("--{long}={value}"));
        }
    }
    VerifyOnly::try_parse_from(&argv)
        .map(|v| v.verify)
        .map_err(|e| format!("{argv:?}: {e}"))
}

#[test]
fn verification_is_off_in_the_base_and_on_with_swap_in_production() {
    use imageswap::verify::{OnError, VerifyMode};
    let configs = env_configs();
    let verify_names: Vec<String> = VerifyOnly::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for (name, config) in &configs {
        let args = parse_verify(config).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Every verify setting is written out (its default, in the base),
        // except those without a default, which stay commented out.
        for variable in &verify_names {
            let has_default = VerifyOnly::command().get_arguments().any(|a| {
                a.get_env().is_some_and(|e| e == variable.as_str()) && !a.get_default_values().is_empty()
            });
            assert_eq!(config.contains_key(variable), has_default, "{name}: {variable}");
        }
        let expected = if name == "production" {
            VerifyMode::On
        } else {
            VerifyMode::Off
        };
        assert_eq!(args.verify, expected, "{name}");
        assert_eq!(args.verify_on_error, OnError::Swap, "{name}");
        assert!(
            args.verify_timeout < humantime::parse_duration(&config["IMAGESWAP_REQUEST_TIMEOUT"]).unwrap(),
            "{name}: an admission waits for its checks within its own deadline"
        );
    }
    // The check can fail: a value the program refuses is caught.
    let mut bad = configs[0].1.clone();
    bad.insert("IMAGESWAP_VERIFY_ON_ERROR".into(), "retry".into());
    assert!(parse_verify(&bad).is_err());
}

#[test]
fn the_registry_credentials_are_an_optional_secret_where_the_program_looks() {
    use imageswap::verify::settings::DEFAULT_REGISTRY_CONFIG;
    let install = install();
    let deployment = object(&install, "Deployment", "imageswap");
    let (_, config) = env_configs().remove(0);
    let args = parse_verify(&config).unwrap();
    assert_eq!(args.registry_config, Path::new(DEFAULT_REGISTRY_CONFIG));
    let all = containers(deployment);
    let serve = all.iter().find(|c| subcommand_of(c) == "serve").unwrap();
    let dir = args.registry_config.parent().unwrap();
    let mount = mount_for(serve, dir).expect("serve mounts the registry credentials directory");
    assert_eq!(mount["readOnly"], true);
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees Secret updates"
    );
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let secret = &volume["secret"];
    assert_eq!(
        secret["optional"], true,
        "without the Secret the pod must start (anonymous checks)"
    );
    let items = secret["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["key"], ".dockerconfigjson",
        "a kubernetes.io/dockerconfigjson Secret"
    );
    assert_eq!(
        items[0]["path"].as_str(),
        args.registry_config.file_name().unwrap().to_str()
    );
    // The sidecar never talks to registries: no credentials there.
    let init = all.iter().find(|c| subcommand_of(c) == "init").unwrap();
    assert!(mount_for(init, dir).is_none());
}
