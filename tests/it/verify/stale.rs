//! Stale-if-error (issue 21 item 6): when a check cannot answer, what the
//! registry said last (present or missing) answers for
//! `IMAGESWAP_VERIFY_STALE_IF_ERROR` past its TTL, instead of the on-error
//! policy; only an image never seen, or one known too long ago, falls to
//! the policy. Against the real registry, stopped for real (connection
//! refused), or behind a front that hangs or fails. The TTLs are zero so
//! every answer has run out at once: nothing here waits on a clock.

use std::time::Duration;

use imageswap::verify::{CheckError, CheckOutcome, Tuning};

use super::churn::encode;
use super::{Setup, args, check, check_within};
use crate::support::registry::{Auth, FORWARD, Front, HANG, Registry};

/// A verifier of `host` whose answers run out at once, served stale for
/// `stale_if_error`.
fn expiring(
    s: &Setup,
    host: &str,
    stale_if_error: Duration,
) -> (imageswap::verify::Verifier, imageswap::verify::VerifyMetrics) {
    let mut a = args(&s.config_path(), None, &[host]);
    a.verify_ttl = Duration::ZERO;
    a.verify_missing_ttl = Duration::ZERO;
    a.verify_stale_if_error = stale_if_error;
    a.verify_timeout = Duration::from_secs(2);
    super::verifier(&a, Tuning::default())
}

const HOUR: Duration = Duration::from_secs(3600);

fn is_unreachable(outcome: &CheckOutcome) -> bool {
    matches!(outcome, CheckOutcome::Error(CheckError::Failed(reason)) if reason.starts_with("cannot connect"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_missing_image_stays_missing_while_its_registry_is_stopped() {
    let s = Setup::new();
    s.open.push_image("stale/present", "1");
    let mirror = Registry::start(s.storage.path(), None, Auth::None);
    let host = mirror.host();
    let (v, metrics) = expiring(&s, &host, HOUR);
    let missing = format!("{host}/stale/missing:1");
    let present = format!("{host}/stale/present:1");
    assert_eq!(check(&v, &missing).await, CheckOutcome::Missing);
    assert_eq!(check(&v, &present).await, CheckOutcome::Present);

    // Stopped: its port refuses connections. Both TTLs have run out.
    drop(mirror);
    assert_eq!(
        check(&v, &missing).await,
        CheckOutcome::Missing,
        "what we knew last was missing: the pod keeps its original"
    );
    assert_eq!(check(&v, &present).await, CheckOutcome::Present);
    let never_seen = check(&v, &format!("{host}/stale/never:1")).await;
    assert!(
        is_unreachable(&never_seen),
        "an image never seen falls to the policy: {never_seen:?}"
    );
    // The missing one is the stale-if-error answer; the present tag is
    // answered stale while its refresh runs (and fails), as before.
    let text = encode(&metrics);
    assert!(
        text.contains("imageswap_verify_cache_total{result=\"stale_if_error\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("imageswap_verify_cache_total{result=\"stale\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_stale_bound_a_check_that_cannot_answer_falls_to_the_policy() {
    let s = Setup::new();
    s.open.push_image("stale/present", "1");
    let mirror = Registry::start(s.storage.path(), None, Auth::None);
    let host = mirror.host();
    let (v, _) = expiring(&s, &host, Duration::ZERO);
    let missing = format!("{host}/stale/missing:1");
    let present = format!("{host}/stale/present:1");
    assert_eq!(check(&v, &missing).await, CheckOutcome::Missing);
    assert_eq!(check(&v, &present).await, CheckOutcome::Present);
    drop(mirror);
    let outcome = check(&v, &missing).await;
    assert!(is_unreachable(&outcome), "missing, past the bound: {outcome:?}");
    // A present tag past the bound is not answered present while its
    // refresh runs either: the check is waited for, and it cannot answer.
    let outcome = check(&v, &present).await;
    assert!(is_unreachable(&outcome), "present, past the bound: {outcome:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_failing_or_refusing_registry_is_answered_from_what_it_said_last() {
    let s = Setup::new();
    let front = Front::start(Some(s.open.addr), FORWARD);
    let host = front.host();
    let (v, _) = expiring(&s, &host, HOUR);
    let [refused, failing, hanging] =
        ["refused", "failing", "hanging"].map(|n| format!("{host}/stale/{n}:1"));
    for image in [&refused, &failing, &hanging] {
        assert_eq!(check(&v, image).await, CheckOutcome::Missing);
    }
    assert_eq!(front.requests(), 3);

    // A refusal (429) is cached for its target and keeps the answer it
    // replaced: the check that got it and the next one (served the cached
    // refusal without asking) both answer missing.
    front.set(429);
    assert_eq!(check(&v, &refused).await, CheckOutcome::Missing, "a 429");
    assert_eq!(check(&v, &refused).await, CheckOutcome::Missing, "a cached 429");
    assert_eq!(front.requests(), 4, "the cached refusal asked nobody");

    front.set(503);
    assert_eq!(check(&v, &failing).await, CheckOutcome::Missing, "a 5xx");
    let never_seen = check(&v, &format!("{host}/stale/other:1")).await;
    assert!(
        matches!(
            never_seen,
            CheckOutcome::Error(CheckError::Status { status: 503, .. })
        ),
        "never seen: the policy decides: {never_seen:?}"
    );

    front.set(HANG);
    assert_eq!(
        check_within(&v, &hanging, Duration::from_millis(100)).await,
        CheckOutcome::Missing,
        "the budget runs out while the check hangs"
    );
}
