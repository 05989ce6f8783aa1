//! The client against the real registry: present, missing, digest and
//! index references over TLS with the extra CA; basic auth (htpasswd) and
//! bearer tokens (the registry verifying our test issuer's JWTs); wrong
//! credentials are an error, never "missing"; a credentials file changed at
//! run time is used at once; a missing image pushed later is found after
//! the missing TTL.

use imageswap::reload::Watched;
use imageswap::verify::{CheckError, CheckOutcome, Tuning};

use super::{Setup, args, check, verifier};
use crate::support::registry::{Auth, TokenServer};

const ZERO_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[tokio::test(flavor = "multi_thread")]
async fn present_missing_digest_and_index_over_tls_with_the_extra_ca() {
    let s = Setup::new();
    let digest = s.open.push_image("team/app", "1.0");
    let index = s.open.push_index("team/multi", "2.0");
    let tls = s.tls(Auth::None);
    let host = tls.host();
    let (v, _) = verifier(&args(&s.config_path(), Some(&s.ca_path), &[]), Tuning::default());
    let cases = [
        (format!("{host}/team/app:1.0"), CheckOutcome::Present),
        (format!("{host}/team/app:9.9"), CheckOutcome::Missing),
        (format!("{host}/team/none:1.0"), CheckOutcome::Missing),
        (format!("{host}/team/app@{digest}"), CheckOutcome::Present),
        (format!("{host}/team/app:1.0@{digest}"), CheckOutcome::Present),
        (format!("{host}/team/app@{ZERO_DIGEST}"), CheckOutcome::Missing),
        (format!("{host}/team/multi:2.0"), CheckOutcome::Present),
        (format!("{host}/team/multi@{index}"), CheckOutcome::Present),
    ];
    for (image, expected) in cases {
        assert_eq!(check(&v, &image).await, expected, "{image}");
    }

    // Without the CA the registry's certificate is not trusted: an error.
    let (untrusting, _) = verifier(&args(&s.config_path(), None, &[]), Tuning::default());
    match check(&untrusting, &format!("{host}/team/app:1.0")).await {
        CheckOutcome::Error(CheckError::Failed(reason)) => {
            assert!(
                reason.contains("certificate") || reason.contains("issuer"),
                "{reason}"
            )
        }
        other => panic!("not a TLS error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_wrong_credentials_are_an_error_and_a_changed_file_is_used() {
    let s = Setup::new();
    s.open.push_image("private/app", "1");
    let registry = s.tls(Auth::Basic {
        user: "robot",
        password: "s3cret",
    });
    let host = registry.host();
    let image = format!("{host}/private/app:1");
    let missing = format!("{host}/private/app:2");
    let a = args(&s.config_path(), Some(&s.ca_path), &[]);

    // No credentials file: anonymous, and the registry says 401.
    let (anonymous, _) = verifier(&a, Tuning::default());
    assert_eq!(
        check(&anonymous, &image).await,
        CheckOutcome::Error(CheckError::Status {
            registry: host.clone(),
            status: 401
        })
    );

    s.write_credentials(&host, "robot", "wrong");
    let metrics = imageswap::verify::VerifyMetrics::new();
    let (v, file) = imageswap::reload::registry_verification_with(&a, metrics, Tuning::default()).unwrap();
    let mut watched = Watched::new(file);
    watched.check().await;
    let wrong = check(&v, &image).await;
    assert_eq!(
        wrong,
        CheckOutcome::Error(CheckError::Status {
            registry: host.clone(),
            status: 401
        }),
        "wrong credentials are an error, not missing"
    );

    // The file changes while the verifier runs: the next check uses it
    // (the error above was not cached).
    s.write_credentials(&host, "robot", "s3cret");
    watched.check().await;
    assert_eq!(check(&v, &image).await, CheckOutcome::Present);
    assert_eq!(check(&v, &missing).await, CheckOutcome::Missing);
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_come_from_the_realm_and_are_reused() {
    let s = Setup::new();
    s.open.push_image("tok/app", "1");
    let issuer = TokenServer::start("robot", "s3cret");
    let registry = s.tls(Auth::Token(&issuer));
    let host = registry.host();
    // The realm is plain HTTP: credentials go there only when it is listed.
    let realm = issuer.addr.to_string();
    let a = args(&s.config_path(), Some(&s.ca_path), &[&realm]);

    s.write_credentials(&host, "robot", "s3cret");
    let (v, _) = verifier(&a, Tuning::default());
    assert_eq!(
        check(&v, &format!("{host}/tok/app:1")).await,
        CheckOutcome::Present
    );
    assert_eq!(issuer.requests(), 1, "one token for the first check");
    assert_eq!(
        check(&v, &format!("{host}/tok/app:2")).await,
        CheckOutcome::Missing
    );
    assert_eq!(
        check(&v, &format!("{host}/tok/app:1.1")).await,
        CheckOutcome::Missing
    );
    assert_eq!(issuer.requests(), 1, "the token of tok/app is reused");
    assert_eq!(
        check(&v, &format!("{host}/tok/other:1")).await,
        CheckOutcome::Missing
    );
    assert_eq!(issuer.requests(), 2, "another repository, another scope");

    // An identity token is exchanged for an access token (OAuth2 POST).
    std::fs::write(
        s.config_path(),
        format!(
            r#"{{"auths": {{"{host}": {{"identitytoken": "{}"}}}}}}"#,
            TokenServer::REFRESH_TOKEN
        ),
    )
    .unwrap();
    let (identity, _) = verifier(&a, Tuning::default());
    assert_eq!(
        check(&identity, &format!("{host}/tok/app:1")).await,
        CheckOutcome::Present
    );
    assert_eq!(issuer.requests(), 3);

    // Wrong credentials: the token endpoint refuses; an error, not missing.
    s.write_credentials(&host, "robot", "wrong");
    let (wrong, _) = verifier(&a, Tuning::default());
    match check(&wrong, &format!("{host}/tok/app:1")).await {
        CheckOutcome::Error(CheckError::Failed(reason)) => {
            assert!(
                reason.contains("token endpoint") && reason.contains("401"),
                "{reason}"
            )
        }
        other => panic!("wrong credentials answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_pushed_later_is_found_after_the_missing_ttl() {
    let s = Setup::new();
    let host = s.open.host();
    let image = format!("{host}/late/app:1");
    let mut a = args(&s.config_path(), None, &[&host]);

    // Within the missing TTL the answer is believed: one request.
    let (believing, _) = verifier(&a, Tuning::default());
    assert_eq!(check(&believing, &image).await, CheckOutcome::Missing);
    s.open.push_image("late/app", "1");
    assert_eq!(check(&believing, &image).await, CheckOutcome::Missing, "cached");
    assert_eq!(s.open.requests("HEAD /v2/late/app/manifests/1 "), 1);

    // Past it (a zero TTL: always past) the registry is asked again.
    a.verify_missing_ttl = std::time::Duration::ZERO;
    let image = format!("{host}/late/app:2");
    let (asking, _) = verifier(&a, Tuning::default());
    assert_eq!(check(&asking, &image).await, CheckOutcome::Missing);
    s.open.push_image("late/app", "2");
    assert_eq!(check(&asking, &image).await, CheckOutcome::Present);
    assert_eq!(s.open.requests("HEAD /v2/late/app/manifests/2 "), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_requests_per_check_with_each_kind_of_auth() {
    let s = Setup::new();
    s.open.push_image("count/app", "1");
    let issuer = TokenServer::start("robot", "s3cret");
    // Plain instances, so the access log can be counted.
    let token = crate::support::registry::Registry::start(s.storage.path(), None, Auth::Token(&issuer));
    let basic = crate::support::registry::Registry::start(
        s.storage.path(),
        None,
        Auth::Basic {
            user: "robot",
            password: "s3cret",
        },
    );
    let (t, b, o) = (token.host(), basic.host(), s.open.host());
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret");
    std::fs::write(
        s.config_path(),
        format!(r#"{{"auths": {{"{t}": {{"auth": "{auth}"}}, "{b}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let realm = issuer.addr.to_string();
    let (v, _) = verifier(
        &args(&s.config_path(), None, &[&t, &b, &o, &realm]),
        Tuning::default(),
    );
    for (host, registry) in [(&o, &s.open), (&t, &token), (&b, &basic)] {
        assert_eq!(
            check(&v, &format!("{host}/count/app:1")).await,
            CheckOutcome::Present
        );
        assert_eq!(
            check(&v, &format!("{host}/count/app:2")).await,
            CheckOutcome::Missing
        );
        let first = registry.requests("HEAD /v2/count/app/manifests/1 ");
        let second = registry.requests("HEAD /v2/count/app/manifests/2 ");
        match host {
            h if h == &o => assert_eq!((first, second), (1, 1), "anonymous: one request a check"),
            // Basic credentials go with the first request: no 401 first.
            h if h == &b => assert_eq!((first, second), (1, 1), "basic: one request a check"),
            // The challenge, then the answer; the token is then sent at once.
            _ => assert_eq!(
                (first, second),
                (2, 1),
                "{host}: a challenge on the first check only"
            ),
        }
    }
    assert_eq!(issuer.requests(), 1, "one token fetch for the repository");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_refusing_head_is_asked_with_get() {
    use crate::support::registry::{Front, NO_HEAD};
    let s = Setup::new();
    s.open.push_image("nohead/app", "1");
    let front = Front::start(Some(s.open.addr), NO_HEAD);
    let host = front.host();
    let (v, _) = verifier(&args(&s.config_path(), None, &[&host]), Tuning::default());
    assert_eq!(
        check(&v, &format!("{host}/nohead/app:1")).await,
        CheckOutcome::Present
    );
    assert_eq!(
        check(&v, &format!("{host}/nohead/app:2")).await,
        CheckOutcome::Missing
    );
    assert_eq!(front.requests(), 4, "HEAD → 405, then GET, for each");
    assert_eq!(s.open.requests("GET /v2/nohead/app/manifests/"), 2);
}
