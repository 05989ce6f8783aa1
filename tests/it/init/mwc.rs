//! `imageswap init`, spec §2 (the MutatingWebhookConfiguration): created from
//! the template with the cluster CA, left untouched (zero writes) when it
//! matches even with the API server's defaults and others' additions, updated
//! with one write when it drifted, never looked at when disabled, and a
//! template without the named webhook fails before any API call.

use base64::Engine as _;
use imageswap::init::{InitSettings, MwcOutcome, PairSource, run_with};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;

use crate::support::init::*;

async fn first_install(fake: &FakeApiServer, root: &std::path::Path) {
    let outcome = run_with(fake.client(), &settings(root, "pod-first"))
        .await
        .unwrap();
    assert_eq!(outcome.mwc, MwcOutcome::Created);
}

fn live_mwc(fake: &FakeApiServer) -> MutatingWebhookConfiguration {
    fake.get(MWC_PATH, MWC).expect("the MWC exists")
}

#[tokio::test]
async fn the_mwc_is_created_from_the_template_with_the_cluster_ca() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();

    let outcome = run_with(fake.client(), &settings(dir.path(), "pod-a"))
        .await
        .unwrap();

    assert_eq!(outcome.mwc, MwcOutcome::Created);
    let mwc = live_mwc(&fake);
    assert_eq!(mwc.metadata.name.as_deref(), Some(MWC));
    let labels = mwc.metadata.labels.clone().unwrap();
    assert_eq!(labels["app"], "imageswap");
    assert_eq!(labels["resource"], "mutatingwebhookconfiguration");
    let hooks = mwc.webhooks.clone().unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.name, WEBHOOK);
    // caBundle: the PEM of kube-root-ca.crt's ca.crt (base64 on the wire).
    assert_eq!(
        hook.client_config.ca_bundle,
        Some(ByteString(fake.ca().pem.clone().into_bytes()))
    );
    let raw = serde_json::to_value(&mwc).unwrap();
    assert_eq!(
        raw["webhooks"][0]["clientConfig"]["caBundle"],
        base64::engine::general_purpose::STANDARD.encode(&fake.ca().pem)
    );
    let service = hook.client_config.service.as_ref().unwrap();
    assert_eq!(
        (service.name.as_str(), service.namespace.as_str()),
        ("imageswap", NAMESPACE)
    );
    assert_eq!(service.path.as_deref(), Some("/"));
    // The template's fields, the string admissionReviewVersions as a list.
    assert_eq!(hook.admission_review_versions, ["v1"]);
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
    let rules = hook.rules.as_ref().unwrap();
    assert_eq!(
        rules[0].operations.as_deref(),
        Some(&["CREATE".to_owned(), "UPDATE".to_owned()][..])
    );
    assert_eq!(rules[0].resources.as_deref(), Some(&["pods".to_owned()][..]));
    let selector = hook
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert_eq!(selector["k8s.twr.io/imageswap"], "enabled");

    let mwc_writes: Vec<_> = fake
        .requests_to(MWC_PATH)
        .into_iter()
        .filter(|r| r.is_write())
        .collect();
    assert_eq!(mwc_writes.len(), 1);
    assert_eq!(mwc_writes[0].method, hyper::Method::POST);
    assert_eq!(
        fake.requests_to(&format!("{}/kube-root-ca.crt", configmaps_path(NAMESPACE)))
            .len(),
        1
    );
}

#[tokio::test]
async fn a_restart_with_everything_in_place_writes_nothing_at_all() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    first_install(&fake, dir.path()).await;
    // Someone else labels and annotates the object: not drift.
    let mut live = live_mwc(&fake);
    live.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("team".into(), "platform".into());
    live.metadata.annotations = Some([("note".to_owned(), "added by hand".to_owned())].into());
    fake.seed(MWC_PATH, &live);
    let before = live_mwc(&fake);
    fake.clear_requests();

    let outcome = run_with(fake.client(), &settings(dir.path(), "pod-second"))
        .await
        .unwrap();

    assert_eq!(outcome.pair, PairSource::Existing);
    assert_eq!(outcome.mwc, MwcOutcome::Unchanged);
    assert_eq!(fake.write_attempts_to("/"), 0, "{:?}", fake.requests());
    // Three reads: the secret, the cluster CA, the MWC.
    assert_eq!(fake.requests().len(), 3, "{:?}", fake.requests());
    assert_eq!(live_mwc(&fake), before);
}

#[tokio::test]
async fn a_drifted_mwc_is_updated_with_one_write_and_keeps_others_fields() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    first_install(&fake, dir.path()).await;
    let mut live = live_mwc(&fake);
    let other_ca = TestCa::new("stale CA");
    let hook = &mut live.webhooks.as_mut().unwrap()[0];
    hook.failure_policy = Some("Ignore".into());
    hook.client_config.ca_bundle = Some(ByteString(other_ca.pem.clone().into_bytes()));
    let labels = live.metadata.labels.as_mut().unwrap();
    labels.remove("resource");
    labels.insert("team".into(), "platform".into());
    fake.seed(MWC_PATH, &live);
    let drifted = live_mwc(&fake);
    fake.clear_requests();

    let outcome = run_with(fake.client(), &settings(dir.path(), "pod-second"))
        .await
        .unwrap();

    assert_eq!(outcome.mwc, MwcOutcome::Updated);
    let writes: Vec<_> = fake.requests().into_iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].method, hyper::Method::PUT);
    assert_eq!(writes[0].path, format!("{MWC_PATH}/{MWC}"));
    let updated = live_mwc(&fake);
    assert_eq!(updated.metadata.uid, drifted.metadata.uid, "updated in place");
    let hook = &updated.webhooks.as_ref().unwrap()[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(
        hook.client_config.ca_bundle,
        Some(ByteString(fake.ca().pem.clone().into_bytes()))
    );
    let labels = updated.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["resource"], "mutatingwebhookconfiguration");
    assert_eq!(
        labels["team"], "platform",
        "fields the template does not set are kept"
    );

    // And now it is in sync: the next start writes nothing.
    fake.clear_requests();
    let outcome = run_with(fake.client(), &settings(dir.path(), "pod-third"))
        .await
        .unwrap();
    assert_eq!(outcome.mwc, MwcOutcome::Unchanged);
    assert_eq!(fake.write_attempts_to("/"), 0);
}

#[tokio::test]
async fn with_auto_mwc_disabled_no_mwc_call_is_made() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = InitSettings {
        disable_auto_mwc: true,
        // Not even read: a missing template does not matter.
        mwc_template: dir.path().join("no-such-template.yaml"),
        ..settings(dir.path(), "pod-a")
    };

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert_eq!(outcome.mwc, MwcOutcome::Disabled);
    assert!(matches!(outcome.pair, PairSource::Issued { .. }));
    assert!(fake.requests_to(MWC_PATH).is_empty());
    assert!(fake.requests_to(&configmaps_path(NAMESPACE)).is_empty());
    assert!(fake.get::<MutatingWebhookConfiguration>(MWC_PATH, MWC).is_none());
    pair_on_disk(&settings.tls_dir);
}

#[tokio::test]
async fn a_template_without_the_named_webhook_fails_before_any_api_call() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = InitSettings {
        webhook_name: "other.webhook.example.com".into(),
        ..settings(dir.path(), "pod-a")
    };

    let err = run_with(fake.client(), &settings).await.unwrap_err();

    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("imageswap-mwc.yaml has no webhook named \"other.webhook.example.com\""),
        "{line}"
    );
    assert!(line.contains("(it has: imageswap.webhook.k8s.twr.io)"), "{line}");
    assert!(line.contains("IMAGESWAP_WEBHOOK_NAME"), "{line}");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[tokio::test]
async fn a_missing_template_is_named() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = InitSettings {
        mwc_template: dir.path().join("absent.yaml"),
        ..settings(dir.path(), "pod-a")
    };

    let err = run_with(fake.client(), &settings).await.unwrap_err();

    let line = err.to_string();
    assert!(
        line.contains("cannot read the webhook configuration template"),
        "{line}"
    );
    assert!(line.contains("absent.yaml"), "{line}");
    assert!(line.contains("IMAGESWAP_DISABLE_AUTO_MWC=true"), "{line}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_missing_cluster_ca_is_a_clear_error() {
    install_crypto_provider();
    let fake = FakeApiServer::start("other-namespace").await;
    let dir = tempfile::tempdir().unwrap();

    let err = run_with(fake.client(), &settings(dir.path(), "pod-a"))
        .await
        .unwrap_err();

    let line = err.to_string();
    assert!(
        line.starts_with("ConfigMap imageswap-system/kube-root-ca.crt does not exist or has no \"ca.crt\""),
        "{line}"
    );
    assert!(fake.requests_to(MWC_PATH).is_empty());
}

#[tokio::test]
async fn the_shipped_template_installs_then_stays_untouched() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/manifests/imageswap-mwc.yaml");
    let with_shipped = |pod: &str| InitSettings {
        mwc_template: shipped.clone(),
        ..settings(dir.path(), pod)
    };

    let outcome = run_with(fake.client(), &with_shipped("pod-a")).await.unwrap();

    assert_eq!(outcome.mwc, MwcOutcome::Created);
    let mwc = live_mwc(&fake);
    let hook = &mwc.webhooks.as_ref().unwrap()[0];
    assert_eq!(hook.name, WEBHOOK);
    assert_eq!(
        hook.client_config.ca_bundle,
        Some(ByteString(fake.ca().pem.clone().into_bytes()))
    );
    assert_eq!(hook.timeout_seconds, Some(5));
    assert!(hook.object_selector.as_ref().unwrap().match_expressions.is_some());

    fake.clear_requests();
    let outcome = run_with(fake.client(), &with_shipped("pod-b")).await.unwrap();
    assert_eq!(outcome.mwc, MwcOutcome::Unchanged);
    assert_eq!(fake.write_attempts_to("/"), 0);
}

/// Issue 22: an operator who switches to an opt-out namespace selector (every
/// namespace not labelled `disabled`) still never sends kube-system's or
/// ImageSwap's own pods to ImageSwap: `init` adds both to the webhook it
/// writes, and a restart finds nothing to change.
#[tokio::test]
async fn an_opt_out_selector_still_excludes_kube_system_and_the_own_namespace() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(template_path()).unwrap();
    let opt_in = "    namespaceSelector:\n      matchLabels:\n        k8s.twr.io/imageswap: \"enabled\"\n";
    assert!(
        original.contains(opt_in),
        "the fixture template's selector changed"
    );
    let opt_out = original.replace(
        opt_in,
        "    namespaceSelector:\n      matchExpressions:\n        \
         - {key: k8s.twr.io/imageswap, operator: NotIn, values: [disabled]}\n",
    );
    let template = dir.path().join("opt-out.yaml");
    std::fs::write(&template, opt_out).unwrap();
    let with_template = |pod: &str| InitSettings {
        mwc_template: template.clone(),
        ..settings(dir.path(), pod)
    };

    let outcome = run_with(fake.client(), &with_template("pod-a")).await.unwrap();

    assert_eq!(outcome.mwc, MwcOutcome::Created);
    let raw = serde_json::to_value(live_mwc(&fake)).unwrap();
    assert_eq!(
        raw["webhooks"][0]["namespaceSelector"],
        serde_json::json!({"matchExpressions": [
            {"key": "k8s.twr.io/imageswap", "operator": "NotIn", "values": ["disabled"]},
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]},
        ]})
    );
    fake.clear_requests();
    let outcome = run_with(fake.client(), &with_template("pod-b")).await.unwrap();
    assert_eq!(outcome.mwc, MwcOutcome::Unchanged);
    assert_eq!(fake.write_attempts_to("/"), 0);
}
