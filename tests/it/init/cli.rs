//! `imageswap init` as the init container runs it: the binary, configured
//! only through the `IMAGESWAP_*` variables the deploy manifests set, finding
//! the API server through a kubeconfig (here: the fake's URL). Checks the
//! variable names, the exit codes and the single failure line.

use std::path::Path;
use std::process::Output;

use crate::support::binary;
use crate::support::init::*;

fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
         current-context: fake\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary with a clean environment plus `vars`, off the runtime
/// thread so the fake keeps answering.
async fn imageswap_init(vars: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        binary::command()
            .arg("init")
            .env_clear()
            .envs(vars)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn base_vars(dir: &Path, fake: &FakeApiServer) -> Vec<(&'static str, String)> {
    vec![
        ("KUBECONFIG", kubeconfig(dir, &fake.url()).display().to_string()),
        ("IMAGESWAP_NAMESPACE_NAME", NAMESPACE.to_owned()),
        ("IMAGESWAP_POD_NAME", "imageswap-5c7d-xk2p9".to_owned()),
        ("IMAGESWAP_TLS_DIR", dir.join("tls").display().to_string()),
        ("IMAGESWAP_MWC_TEMPLATE", template_path().display().to_string()),
        ("IMAGESWAP_LOG_FORMAT", "json".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_installs_from_environment_variables_and_exits_zero() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();

    let mut vars = base_vars(dir.path(), &fake);
    vars.push(("IMAGESWAP_CERT_SOURCE", "csr".to_owned()));
    let output = imageswap_init(vars).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(pair_on_disk(&dir.path().join("tls")), stored_pair(&fake).unwrap());
    assert_eq!(fake.writes_to(MWC_PATH), 1);
    let csrs: Vec<k8s_openapi::api::certificates::v1::CertificateSigningRequest> = fake.list(CSR_PATH);
    assert!(
        csrs[0]
            .metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("imageswap.imageswap-system.imageswap-5c7d-xk2p9.")
    );
    // JSON logs, one object per line, the last one saying the pod may serve.
    let last = stderr.lines().last().unwrap();
    let event: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["message"], "Init finished; the pod may start serving.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_exits_one_with_a_single_error_line() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    fake.set_signer(SignerMode::Never);
    let dir = tempfile::tempdir().unwrap();
    let mut vars = base_vars(dir.path(), &fake);
    vars.push(("IMAGESWAP_CERT_SOURCE", "csr".to_owned()));
    vars.push(("IMAGESWAP_CSR_TIMEOUT", "1s".to_owned()));
    vars.push((
        "IMAGESWAP_CSR_SIGNER_NAME",
        "example.com/no-such-signer".to_owned(),
    ));

    let output = imageswap_init(vars).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|line| line.contains("\"ERROR\"")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let event: serde_json::Value = serde_json::from_str(errors[0]).unwrap();
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains("example.com/no-such-signer did not sign it within 1s"),
        "{message}"
    );
    assert!(message.contains("IMAGESWAP_CSR_SIGNER_NAME"), "{message}");
    let csrs: Vec<k8s_openapi::api::certificates::v1::CertificateSigningRequest> = fake.list(CSR_PATH);
    assert_eq!(csrs[0].spec.signer_name, "example.com/no-such-signer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_variables_exit_two_naming_the_variable_before_any_api_call() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    for (variable, value) in [
        ("IMAGESWAP_DISABLE_AUTO_MWC", "maybe"),
        ("IMAGESWAP_CSR_TIMEOUT", "soon"),
        ("IMAGESWAP_CERT_RENEW_BEFORE", "-1d"),
        ("IMAGESWAP_NAMESPACE_NAME", "Not_A_Namespace"),
    ] {
        let mut vars = base_vars(dir.path(), &fake);
        vars.retain(|(name, _)| *name != variable);
        vars.push((variable, value.to_owned()));

        let output = imageswap_init(vars).await;

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}: {stderr}");
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
    // `TRUE` in capitals, as the original's manifests wrote it, is accepted;
    // with no source set, the original's csr stays (the caBundle the
    // operator keeps trusts the cluster CA), and one line says why and what
    // to set.
    let mut vars = base_vars(dir.path(), &fake);
    vars.push(("IMAGESWAP_DISABLE_AUTO_MWC", "TRUE".to_owned()));
    let output = imageswap_init(vars).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(fake.requests_to(MWC_PATH).is_empty());
    assert_eq!(
        fake.list::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(CSR_PATH)
            .len(),
        1
    );
    let why: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("keeping csr"))
        .collect();
    assert_eq!(why.len(), 1, "{stderr}");
    assert!(why[0].contains("\"WARN\""), "{}", why[0]);
    assert!(why[0].contains("set IMAGESWAP_CERT_SOURCE=csr"), "{}", why[0]);
}

/// The original's variables, no IMAGESWAP_CERT_SOURCE among them (an
/// upgrade by changing images): the default is self-signed, so no CSR, no
/// cluster-wide certificate right used, and no line about the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_source_the_binary_issues_from_its_own_ca() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();

    let output = imageswap_init(base_vars(dir.path(), &fake)).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(fake.requests_to(CSR_PATH).is_empty(), "{:?}", fake.requests());
    assert!(
        fake.get::<k8s_openapi::api::core::v1::Secret>(
            &secrets_path(NAMESPACE),
            "imageswap-tls-self-signed-ca"
        )
        .is_some()
    );
    assert!(!stderr.contains("keeping csr"), "{stderr}");
    assert_eq!(fake.writes_to(MWC_PATH), 1);
}
