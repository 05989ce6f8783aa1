//! The generated matchConditions in the webhook configuration `init`
//! manages (issue 22): written on create, merged with the template's own
//! (theirs win on a name clash), left alone in sync (no write), and
//! rewritten with exactly one write by the `--watch` sidecar when the maps
//! change.

use std::path::Path;
use std::sync::Arc;

use imageswap::admission::PullSecretsArgs;
use imageswap::conditions::ConditionsArgs;
use imageswap::init::watch::Watcher;
use imageswap::init::{InitSettings, MwcOutcome, run_with};
use imageswap::rules::{Mode, RulesArgs};
use imageswap::telemetry::metrics::InitMetrics;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;

use crate::support::init::*;

/// The fixture template with two conditions of the operator's own, one of
/// them named like a generated one.
fn template_with_own_conditions(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(template_path()).unwrap();
    let text = text.replace(
        "    sideEffects: None\n",
        "    sideEffects: None\n    matchConditions:\n      - name: exclude-leader-election\n        expression: \"!has(object.metadata.name) || object.metadata.name != 'leader'\"\n      - name: imageswap-not-disabled\n        expression: \"true\"\n",
    );
    assert!(text.contains("matchConditions"));
    let path = dir.join("mwc.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn settings_with_maps(dir: &Path, pod: &str, maps: &Path) -> InitSettings {
    InitSettings {
        mwc_template: template_with_own_conditions(dir),
        conditions: Some(ConditionsArgs {
            rules: RulesArgs {
                maps_file: maps.to_owned(),
                mode: Mode::Maps,
                prefix: None,
                keep_images: "auto".to_owned(),
            },
            pull_secrets: PullSecretsArgs::default(),
            disable_label: "k8s.twr.io/imageswap".to_owned(),
        }),
        ..settings(dir, pod)
    }
}

fn conditions(fake: &FakeApiServer) -> Vec<(String, String)> {
    let mwc: MutatingWebhookConfiguration = fake.get(MWC_PATH, MWC).expect("the MWC exists");
    mwc.webhooks.unwrap()[0]
        .match_conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.expression))
        .collect()
}

fn mwc_writes(fake: &FakeApiServer) -> usize {
    fake.requests_to(MWC_PATH)
        .into_iter()
        .filter(|r| r.is_write())
        .count()
}

#[tokio::test]
async fn generated_conditions_are_written_merged_and_rewritten_once_per_maps_change() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("imageswap-maps.conf");
    std::fs::write(&maps, "default::mirror.example\nmirror.example::\n").unwrap();
    let settings = settings_with_maps(dir.path(), "pod-a", &maps);

    let outcome = run_with(fake.client(), &settings).await.unwrap();

    assert_eq!(outcome.mwc, MwcOutcome::Created);
    let written = conditions(&fake);
    let names: Vec<&str> = written.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "exclude-leader-election",
            "imageswap-not-disabled",
            "imageswap-update-changes-images",
            "imageswap-images-may-change"
        ]
    );
    // The operator's condition of the same name is theirs, untouched.
    assert_eq!(written[1].1, "true");
    let images = &written[3].1;
    assert!(
        images.contains("['mirror.example/'].exists(p, c.image.startsWith(p))"),
        "{images}"
    );
    assert!(images.contains("c.image in ['auto']"), "{images}");
    assert!(!images.contains("quay.io"), "{images}");

    // A restart and a sidecar pass in sync: no write.
    fake.clear_requests();
    let again = run_with(fake.client(), &settings_with_maps(dir.path(), "pod-b", &maps))
        .await
        .unwrap();
    assert_eq!(again.mwc, MwcOutcome::Unchanged);
    let mut watcher = Watcher::new(fake.client(), settings.clone(), Arc::new(InitMetrics::new()));
    assert_eq!(watcher.pass().await.unwrap().mwc, MwcOutcome::Unchanged);
    assert_eq!(mwc_writes(&fake), 0, "{:?}", fake.requests());

    // The maps change: one write, then in sync again.
    std::fs::write(&maps, "default::mirror.example\nmirror.example::\nquay.io::\n").unwrap();
    assert_eq!(watcher.pass().await.unwrap().mwc, MwcOutcome::Updated);
    assert_eq!(mwc_writes(&fake), 1, "{:?}", fake.requests());
    let rewritten = conditions(&fake);
    assert_eq!(rewritten.len(), 4);
    assert_eq!(rewritten[1].1, "true");
    assert!(rewritten[3].1.contains("'quay.io/'"), "{}", rewritten[3].1);
    assert_eq!(watcher.pass().await.unwrap().mwc, MwcOutcome::Unchanged);
    assert_eq!(mwc_writes(&fake), 1, "{:?}", fake.requests());
}
