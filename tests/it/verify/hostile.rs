//! Bursts and hostile answers (issue 20): what the verifier concludes
//! when the registry is slow but healthy, answers per repository with
//! 4xx, hands out a token that never expires, or names a token realm
//! elsewhere. The registries are `Scripted` fakes (support::registry):
//! the real one cannot be made to answer this way. Request and connection
//! counts are what the fake saw; nothing here asserts a time.

use std::sync::Arc;
use std::time::Duration;

use imageswap::verify::{CheckError, CheckImages, CheckOutcome, Tuning};

use super::churn::encode;
use super::{args, check, mirrors_of, ready_now, verifier};
use crate::support::registry::{Front, HANG, Reply, Scripted};
use crate::support::server::{self, Protocol, TestServer};
use crate::support::{applied, container_images, eventually, pod_review, warnings};

fn long_breaker() -> Tuning {
    Tuning {
        breaker_open: Duration::from_secs(3600),
        ..Tuning::default()
    }
}

fn no_credentials() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    (dir, path)
}

/// A slow but healthy registry behind a small cap: the checks queued
/// behind it are no evidence against it. Every admission answers present
/// or "timeout" (its own budget), never "circuit open"; the checks go on
/// and fill the cache; one request per image.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_behind_the_cap_is_verified_and_never_opens_the_breaker() {
    let registry = Scripted::start(|_| Reply::status(200).after(Duration::from_millis(100)));
    let host = registry.host();
    let (_dir, config) = no_credentials();
    let mut a = args(&config, None, &[&host]);
    // Ten round trips' worth of queue at the cap; the burst is four times
    // that (a request itself takes 100 ms, far below the timeout).
    a.verify_timeout = Duration::from_secs(1);
    let (v, metrics) = verifier(
        &a,
        Tuning {
            max_in_flight_per_registry: 2,
            ..long_breaker()
        },
    );
    let v = Arc::new(v);
    let images: Vec<String> = (0..80).map(|i| format!("{host}/burst/app:{i}")).collect();
    let budget = Duration::from_millis(50);
    let tasks: Vec<_> = images
        .chunks(2)
        .map(|pair| {
            let v = v.clone();
            let targets: Vec<Arc<str>> = pair.iter().map(|i| Arc::from(i.as_str())).collect();
            tokio::spawn(async move {
                let images: Vec<&str> = targets.iter().map(|t| &**t).collect();
                let mirrors = mirrors_of(&images);
                v.check(targets.clone(), &mirrors, budget).await
            })
        })
        .collect();
    for task in tasks {
        for outcome in task.await.unwrap() {
            assert!(
                matches!(
                    outcome,
                    CheckOutcome::Present | CheckOutcome::Error(CheckError::Timeout(_))
                ),
                "a queued check is no registry error: {outcome:?}"
            );
        }
    }
    assert!(
        eventually(Duration::from_secs(30), async || v.checks_in_flight() == 0).await,
        "the background checks end"
    );
    let all: Vec<&str> = images.iter().map(String::as_str).collect();
    assert_eq!(
        ready_now(&*v, &all),
        Some(vec![CheckOutcome::Present; 80]),
        "every image verified and cached"
    );
    assert_eq!(registry.count("HEAD /v2/burst/app/manifests/"), 80);
    let text = encode(&metrics);
    assert!(
        text.contains("imageswap_verify_circuit_open{registry=\"127.0.0.1\"} 0"),
        "{text}"
    );
}

/// 403, 429 and a 401 after a token are answers about one repository: any
/// number of them leave the registry's other images alone, a repeated
/// target is answered from a short-lived cache, and 429's `Retry-After`
/// keeps the target from being asked again before it.
#[tokio::test(flavor = "multi_thread")]
async fn per_repository_refusals_do_not_open_the_breaker() {
    // The registry's own address, for its realm (known once it listens).
    let own = Arc::new(std::sync::OnceLock::<String>::new());
    let realm = own.clone();
    let registry = Scripted::start(move |seen| {
        let path = seen.path.as_str();
        if path.starts_with("/token") {
            return Reply::status(200).body(r#"{"token":"t","expires_in":300}"#);
        }
        if path.starts_with("/v2/forbidden/") {
            Reply::status(403)
        } else if path.starts_with("/v2/limited/") {
            Reply::status(429).header("retry-after", "120")
        } else if path.starts_with("/v2/typo/") {
            // A token registry answers 401 for a repository that does not
            // exist, token or not.
            Reply::status(401).header(
                "www-authenticate",
                &format!(
                    r#"Bearer realm="http://{}/token",service="s""#,
                    realm.get().map_or("", String::as_str)
                ),
            )
        } else {
            Reply::status(200)
        }
    });
    let host = registry.host();
    own.set(host.clone()).unwrap();
    let (_dir, config) = no_credentials();
    let (v, metrics) = verifier(&args(&config, None, &[&host]), long_breaker());
    for repository in ["forbidden", "limited", "typo"] {
        for tag in 0..6 {
            match check(&v, &format!("{host}/{repository}/app:{tag}")).await {
                CheckOutcome::Error(CheckError::Status { status, .. }) => {
                    assert!([403, 429, 401].contains(&status), "{repository}: {status}")
                }
                other => panic!("{repository}:{tag} answered {other:?}"),
            }
        }
    }
    assert_eq!(
        check(&v, &format!("{host}/good/app:1")).await,
        CheckOutcome::Present,
        "the registry's other images are still checked"
    );
    let text = encode(&metrics);
    assert!(
        text.contains("imageswap_verify_circuit_open{registry=\"127.0.0.1\"} 0"),
        "{text}"
    );
    // Asked again at once: answered from the cache, the registry not asked.
    let before = registry.count("HEAD ");
    for repository in ["forbidden", "limited", "typo"] {
        assert!(matches!(
            ready_now(&v, &[&format!("{host}/{repository}/app:0")]),
            Some(outcomes) if matches!(outcomes[0], CheckOutcome::Error(CheckError::Status { .. }))
        ));
    }
    assert_eq!(registry.count("HEAD "), before);
}

/// A registry that has every image for the token `t`, and challenges any
/// request without it to fetch one from `realm`.
fn bearer_registry(realm: String) -> Scripted {
    Scripted::start(move |seen| {
        if seen.authorization.as_deref() == Some("Bearer t") {
            Reply::status(200)
        } else {
            Reply::status(401).header(
                "www-authenticate",
                &format!(r#"Bearer realm="{realm}",service="s""#),
            )
        }
    })
}

/// A token whose `expires_in` is past what an `Instant` can hold is used
/// (for a bounded time), not a panic.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_never_expires_is_no_panic() {
    let token_service = Scripted::start(|seen| {
        let lifetime = if seen.path.contains("forever") {
            u64::MAX.to_string()
        } else {
            i64::MAX.to_string()
        };
        Reply::status(200).body(&format!(r#"{{"token":"t","expires_in":{lifetime}}}"#))
    });
    let realm = format!("http://{}/token", token_service.host());
    let registry = bearer_registry(realm);
    let host = registry.host();
    let (_dir, config) = no_credentials();
    let (v, metrics) = verifier(
        &args(&config, None, &[&host, &token_service.host()]),
        long_breaker(),
    );
    for repository in ["forever", "long"] {
        assert_eq!(
            check(&v, &format!("{host}/{repository}/app:1")).await,
            CheckOutcome::Present,
            "{repository}"
        );
    }
    let text = encode(&metrics);
    assert!(
        text.contains(&format!(
            "imageswap_verify_checks_total{{registry=\"{}\",outcome=\"present\"}} 2",
            "127.0.0.1"
        )),
        "{text}"
    );
}

/// Credentials go over TLS, or to a host listed as plain HTTP: a realm on
/// an unlisted plain-HTTP port gets the token request without them.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_never_go_to_a_cleartext_realm() {
    let token_service = Scripted::start(|_| Reply::status(200).body(r#"{"token":"t"}"#));
    let realm = format!("http://{}/token", token_service.host());
    let registry = bearer_registry(realm);
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths": {{"{host}": {{"username": "robot", "password": "s3cret"}}}}}}"#),
    )
    .unwrap();
    // The registry is listed as plain HTTP; the realm's port is not.
    let (v, _) = verifier(&args(&config, None, &[&host]), long_breaker());
    assert_eq!(check(&v, &format!("{host}/app/x:1")).await, CheckOutcome::Present);
    let token_requests = token_service.seen();
    assert!(!token_requests.is_empty());
    assert!(
        token_requests.iter().all(|s| s.authorization.is_none()),
        "{token_requests:?}"
    );
}

/// The in-process server verifying with `verify` under `maps`.
async fn server_with(maps: String, verify: imageswap::verify::VerifyArgs) -> TestServer {
    TestServer::start_with(server::Setup {
        maps: maps.into_bytes(),
        verify_timeout: verify.verify_timeout,
        verify: Some(verify),
        ..server::Setup::default()
    })
    .await
}

async fn review(server: &TestServer, body: &[u8]) -> serde_json::Value {
    let answer = server
        .client(Protocol::Http1)
        .post(&server.url("/"), body.to_vec())
        .await;
    assert_eq!(answer.status, http::StatusCode::OK);
    let answer = answer.json();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    answer
}

/// One admission of known targets beside many that hang: at its deadline
/// the known answers stand (the missing ones are kept) and only the
/// pending ones fall to the policy (`swap`: patched unverified).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_known_at_the_deadline_survive_it() {
    let healthy = Scripted::start(|_| Reply::status(404));
    let hanging = Front::start(None, HANG);
    // Two hosts: the cap is per host, and the hanging one must not hold
    // the healthy one's permits.
    let healthy_host = format!("localhost:{}", healthy.addr.port());
    let (_dir, config) = no_credentials();
    let mut verify = args(&config, None, &[&healthy_host, &hanging.host()]);
    verify.verify_timeout = Duration::from_secs(1);
    let maps = format!(
        "default::\nh.example::{healthy_host}\ns.example::{}\n",
        hanging.host()
    );
    let server = server_with(maps, verify).await;
    let known: Vec<String> = (0..100).map(|i| format!("h.example/app{i}:1")).collect();
    let known_refs: Vec<&str> = known.iter().map(String::as_str).collect();
    let body = pod_review("known", &known_refs);
    let answer = review(&server, &body).await;
    let pod = applied(&body, &answer);
    assert_eq!(
        container_images(&pod["spec"]),
        known,
        "missing in the mirror: kept; {:?}",
        warnings(&answer)
    );

    let pending: Vec<String> = (0..150).map(|i| format!("s.example/app{i}:1")).collect();
    let images: Vec<&str> = known_refs
        .iter()
        .copied()
        .chain(pending.iter().map(String::as_str))
        .collect();
    let body = pod_review("mixed", &images);
    let pod = applied(&body, &review(&server, &body).await);
    let expected: Vec<String> = known
        .iter()
        .cloned()
        .chain((0..150).map(|i| format!("{}/app{i}:1", hanging.host())))
        .collect();
    assert_eq!(container_images(&pod["spec"]), expected);
}

/// A registry key without a port keeps the image's port (maps.md): the
/// pod's port is not one the maps name, so it is refused without a
/// connection, and the warning says why in words of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_chosen_by_the_pod_is_never_contacted() {
    let probed = Scripted::start(|_| Reply::status(200));
    let named = Scripted::start(|_| Reply::status(200));
    let (_dir, config) = no_credentials();
    let verify = args(&config, None, &[&probed.host(), &named.host()]);
    let maps = format!(
        "default::\nsrc.example::127.0.0.1\nok.example::{}\n",
        named.host()
    );
    let server = server_with(maps, verify).await;
    let image = format!("src.example:{}/x:1", probed.addr.port());
    let body = pod_review("probe", &[&image, "ok.example/x:1"]);
    let answer = review(&server, &body).await;
    assert_eq!(
        warnings(&answer),
        [format!(
            "imageswap: 127.0.0.1:{}/x:1 not verified: registry not in the maps file",
            probed.addr.port()
        )]
    );
    assert_eq!(probed.connections(), 0, "{:?}", probed.seen());
    assert_eq!(
        named.count("HEAD /v2/x/manifests/1"),
        1,
        "a named registry is asked"
    );
}

/// The breaker's changes are told once each in the log: opening with the
/// reason (a WARN), closing after a good probe (an INFO). The runtime is
/// this thread's, so the capture sees the check tasks' lines.
#[test]
fn the_breaker_opening_and_closing_are_logged_once_each() {
    let logs = crate::support::logs::LogCapture::on_this_thread();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let status = failing.clone();
    let registry = Scripted::start(move |_| {
        Reply::status(if status.load(std::sync::atomic::Ordering::SeqCst) {
            503
        } else {
            200
        })
    });
    let host = registry.host();
    let (_dir, config) = no_credentials();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Open for no time: the check after the fifth error is the probe.
        let (v, _) = verifier(
            &args(&config, None, &[&host]),
            Tuning {
                breaker_open: Duration::ZERO,
                ..Tuning::default()
            },
        );
        for tag in 0..5 {
            check(&v, &format!("{host}/down/app:{tag}")).await;
        }
        failing.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            check(&v, &format!("{host}/down/app:9")).await,
            CheckOutcome::Present
        );
    });
    let text = logs.text();
    let opened: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Opened the breaker of a registry"))
        .collect();
    assert_eq!(opened.len(), 1, "{text}");
    assert!(
        opened[0].contains("WARN") && opened[0].contains(&format!("{host} answered 503")),
        "{text}"
    );
    assert_eq!(
        text.matches("Closed the breaker of a registry").count(),
        1,
        "{text}"
    );
}
