//! Platform-aware verification (issue 21 item 5) against the real
//! registry: an index or a single manifest's config is read once per
//! digest, and a target passes only with every platform its pod may run
//! on. Request counts come from the registry's access log.

use std::sync::Arc;

use imageswap::settings::SettingValue as _;
use imageswap::verify::platform::Platform;
use imageswap::verify::{CheckImages, CheckOutcome, Tuning};

use super::{SLOW, Setup, args, mirrors_of};
use crate::support::registry::Registry;

fn arch(arch: &str) -> Platform {
    Platform {
        architecture: Some(arch.to_owned()),
        ..Platform::default()
    }
}

async fn check_on(v: &impl CheckImages, image: &str, platforms: &[Platform]) -> CheckOutcome {
    let mut outcomes = v
        .check_on(vec![Arc::from(image)], platforms, &mirrors_of(&[image]), SLOW)
        .await;
    outcomes.remove(0)
}

/// Every request to `repository` so far: (HEADs, GETs).
fn requests(r: &Registry, repository: &str) -> (usize, usize) {
    (
        r.requests(&format!("\"HEAD /v2/{repository}/")),
        r.requests(&format!("\"GET /v2/{repository}/")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_without_the_pods_architecture_keeps_the_original_and_is_read_once() {
    let s = Setup::new();
    let repository = "plat/app";
    let amd64_only = s.open.push_index_of(repository, "1", &["amd64"]);
    s.open.push_index_of(repository, "2", &["amd64", "arm64"]);
    let host = s.open.host();
    let (v, _) = super::verifier(&args(&s.config_path(), None, &[&host]), Tuning::default());
    let before = requests(&s.open, repository);

    let one = format!("{host}/{repository}:1");
    assert_eq!(
        check_on(&v, &one, &[arch("arm64")]).await,
        CheckOutcome::NoPlatform("arm64".to_owned()),
        "an arm64 pod, an index with linux/amd64 only"
    );
    let after_one = requests(&s.open, repository);
    assert_eq!(
        (after_one.0 - before.0, after_one.1 - before.1),
        (1, 1),
        "1 HEAD + 1 GET of the index"
    );
    assert_eq!(
        check_on(&v, &format!("{host}/{repository}:2"), &[arch("arm64")]).await,
        CheckOutcome::Present,
        "the same pod, an index with both"
    );
    assert_eq!(
        check_on(&v, &one, &[arch("amd64")]).await,
        CheckOutcome::Present,
        "an amd64 pod is fine with it"
    );
    let seen = requests(&s.open, repository);
    // Within the TTL: nothing more for a requirement already checked…
    assert_eq!(
        check_on(&v, &one, &[arch("arm64")]).await,
        CheckOutcome::NoPlatform("arm64".to_owned())
    );
    // …and another tag of the same index costs its HEAD only.
    s.open.put_tag(repository, "1-again", &amd64_only);
    let seen_after_tag = requests(&s.open, repository);
    assert_eq!(
        check_on(&v, &format!("{host}/{repository}:1-again"), &[arch("arm64")]).await,
        CheckOutcome::NoPlatform("arm64".to_owned())
    );
    let end = requests(&s.open, repository);
    assert_eq!(seen_after_tag.1 - seen.1, 1, "the tag's own GET to push it");
    assert_eq!(
        (end.0 - seen_after_tag.0, end.1 - seen_after_tag.1),
        (1, 0),
        "an index seen once is not fetched again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_manifest_s_platform_comes_from_its_config() {
    let s = Setup::new();
    s.open.push_image_for("plat/single", "1", "arm64");
    let host = s.open.host();
    let (v, _) = super::verifier(&args(&s.config_path(), None, &[&host]), Tuning::default());
    let image = format!("{host}/plat/single:1");
    assert_eq!(
        check_on(&v, &image, &[arch("arm64")]).await,
        CheckOutcome::Present
    );
    assert_eq!(
        check_on(&v, &image, &[arch("amd64")]).await,
        CheckOutcome::NoPlatform("amd64".to_owned())
    );
    assert_eq!(
        s.open.requests("\"GET /v2/plat/single/blobs/"),
        1,
        "the config blob, read once (cached by digest)"
    );
    // Per new single-platform image: 1 HEAD, 1 GET of its manifest (for
    // its config's digest), 1 GET of the config; the check for the second
    // requirement cost its HEAD only (the manifest digest's platforms are
    // cached). The push itself made no HEAD and no GET.
    assert_eq!(s.open.requests("\"HEAD /v2/plat/single/manifests/"), 2);
    assert_eq!(s.open.requests("\"GET /v2/plat/single/manifests/"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_setting_applies_when_the_pod_pins_no_platform() {
    let s = Setup::new();
    s.open.push_index_of("plat/set", "1", &["amd64"]);
    let host = s.open.host();
    let mut a = args(&s.config_path(), None, &[&host]);
    a.verify_platforms = vec![
        Platform::parse_setting("linux/amd64").unwrap(),
        Platform::parse_setting("linux/arm64").unwrap(),
    ];
    let (v, _) = super::verifier(&a, Tuning::default());
    let image = format!("{host}/plat/set:1");
    assert_eq!(
        check_on(&v, &image, &[]).await,
        CheckOutcome::NoPlatform("linux/arm64".to_owned())
    );
    assert_eq!(
        check_on(&v, &image, &[arch("amd64")]).await,
        CheckOutcome::Present,
        "the pod's own platforms win"
    );
    // Without the setting, nothing changes: existence only, no GET.
    let (plain, _) = super::verifier(&args(&s.config_path(), None, &[&host]), Tuning::default());
    let gets = s.open.requests("\"GET /v2/plat/set/manifests/");
    assert_eq!(check_on(&plain, &image, &[]).await, CheckOutcome::Present);
    assert_eq!(s.open.requests("\"GET /v2/plat/set/manifests/"), gets);
}
