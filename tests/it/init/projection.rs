//! Pull secret projection (issue 23) against the fake API server's list and
//! watch: first sync, a namespace labelled later, a label removed, a rotated
//! source, a deleted source, a foreign Secret in the way, the setting
//! changed between runs, a terminating namespace, an expired watch (410 →
//! relist), the API server away and back, and three replicas at once. Every
//! wait is for a condition, with a deadline; no timing is asserted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::support::fake_apiserver::{NAMESPACES_PATH, events_path};
use crate::support::init::*;
use imageswap::admission::PullSecrets;
use imageswap::init::projection::{self, HASH_ANNOTATION, ProjectionSettings, content_hash};
use imageswap::init::settings::Projection;
use imageswap::init::{InitSettings, watch_with};
use imageswap::settings::SettingValue;
use imageswap::telemetry::metrics::InitMetrics;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(30);
const SELECTOR: &str = "k8s.twr.io/imageswap=enabled";
const PULL: &str = "harbor-pull";

fn namespace(name: &str, labelled: bool) -> Namespace {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    if labelled {
        ns.metadata.labels = Some([("k8s.twr.io/imageswap".to_owned(), "enabled".to_owned())].into());
    }
    ns
}

fn source(name: &str, password: &str) -> Secret {
    let config = format!(r#"{{"auths":{{"harbor.example.com":{{"auth":"{password}"}}}}}}"#);
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".to_owned()),
        data: Some([(".dockerconfigjson".to_owned(), ByteString(config.into_bytes()))].into()),
        ..Secret::default()
    }
}

fn settings_for(secrets: &[&str], pod: &str) -> ProjectionSettings {
    ProjectionSettings {
        namespace: NAMESPACE.to_owned(),
        secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
        selector: SELECTOR.to_owned(),
        recheck: Duration::from_millis(300),
        pod_name: pod.to_owned(),
    }
}

/// One running reconciler.
struct Projector {
    metrics: Arc<InitMetrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Projector {
    fn start(fake: &FakeApiServer, settings: ProjectionSettings) -> Projector {
        let metrics = Arc::new(InitMetrics::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(projection::run(
            fake.client(),
            settings,
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Projector {
            metrics,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .expect("the projection stops")
            .expect("the projection does not panic");
    }

    /// The value of one series of the projection's metrics.
    fn metric(&self, series: &str) -> Option<f64> {
        self.metrics
            .encode()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

/// Our copies of `name`: namespace → the copy.
fn copies(fake: &FakeApiServer, name: &str) -> BTreeMap<String, Secret> {
    let mut found = BTreeMap::new();
    for ns in fake.list::<Namespace>(NAMESPACES_PATH) {
        let ns = ns.metadata.name.unwrap_or_default();
        if let Some(secret) = fake.get::<Secret>(&secrets_path(&ns), name)
            && secret
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/managed-by"))
                == Some(&"imageswap".to_owned())
        {
            found.insert(ns, secret);
        }
    }
    found
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` labelled namespaces `team-0…`, two unlabelled ones and the source.
fn cluster(fake: &FakeApiServer, n: usize) {
    for i in 0..n {
        fake.seed(NAMESPACES_PATH, &namespace(&format!("team-{i}"), true));
    }
    fake.seed(NAMESPACES_PATH, &namespace("plain-0", false));
    fake.seed(NAMESPACES_PATH, &namespace("plain-1", false));
    fake.seed(NAMESPACES_PATH, &namespace(NAMESPACE, true));
    fake.seed(&secrets_path(NAMESPACE), &source(PULL, "v1"));
}

fn all_have(fake: &FakeApiServer, n: usize, hash: &str) -> bool {
    let found = copies(fake, PULL);
    found.len() == n
        && found.values().all(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(HASH_ANNOTATION))
                == Some(&hash.to_owned())
        })
}

/// Makes every reconciler run a pass (a namespace event they all see) and
/// gives it time to finish.
async fn nudge(fake: &FakeApiServer, round: usize) {
    let mut ns = namespace("team-0", true);
    ns.metadata.annotations = Some([("nudge".to_owned(), round.to_string())].into());
    fake.seed(NAMESPACES_PATH, &ns);
    // Room for the event, the debounce and a pass (and any write it would
    // make) before the caller counts writes; a claim of absence, so a wait
    // rather than a condition.
    tokio::time::sleep(Duration::from_millis(600)).await;
}

#[tokio::test]
async fn first_sync_copies_into_every_selected_namespace_and_in_sync_writes_nothing() {
    let fake = FakeApiServer::start(NAMESPACE).await;
    cluster(&fake, 20);
    let projector = Projector::start(&fake, settings_for(&[PULL], "pod-a"));
    let hash = content_hash(&source(PULL, "v1"));
    wait_for("20 copies", || all_have(&fake, 20, &hash)).await;
    // Stored before recorded and answered: wait for the last answer.
    wait_for("20 creates counted", || {
        projector.metric("imageswap_pull_secret_writes_total{action=\"create\"}") == Some(20.0)
    })
    .await;
    let found = copies(&fake, PULL);
    assert!(!found.contains_key("plain-0") && !found.contains_key("plain-1"));
    assert!(!found.contains_key(NAMESPACE), "never a copy over the source");
    let copy = &found["team-3"];
    assert_eq!(copy.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    assert_eq!(copy.data, source(PULL, "v1").data);
    assert_eq!(
        fake.writes_to("/api/v1/namespaces/team-"),
        20,
        "one create per namespace"
    );
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.path != "/api/v1/secrets" || r.method == hyper::Method::GET),
        "never a write across namespaces"
    );
    fake.clear_requests();
    nudge(&fake, 1).await;
    assert_eq!(
        fake.write_attempts_to("/api/v1/namespaces/"),
        0,
        "no write in sync"
    );
    assert_eq!(
        projector.metric("imageswap_pull_secret_copies{state=\"in_sync\"}"),
        Some(20.0)
    );
    assert_eq!(
        projector.metric("imageswap_pull_secret_writes_total{action=\"create\"}"),
        Some(20.0)
    );
    projector.stop().await;
}

#[tokio::test]
async fn a_new_namespace_gets_its_copy_and_one_unlabelled_loses_it() {
    let fake = FakeApiServer::start(NAMESPACE).await;
    cluster(&fake, 3);
    let projector = Projector::start(&fake, settings_for(&[PULL], "pod-a"));
    wait_for("3 copies", || copies(&fake, PULL).len() == 3).await;
    fake.seed(NAMESPACES_PATH, &namespace("team-new", true));
    wait_for("the new namespace's copy", || {
        copies(&fake, PULL).contains_key("team-new")
    })
    .await;
    // The label goes: the copy goes (the watch sees the namespace leave).
    fake.seed(NAMESPACES_PATH, &namespace("team-1", false));
    wait_for("the copy removed", || !copies(&fake, PULL).contains_key("team-1")).await;
    // The fake removes it before it records and answers the request: the
    // reconciler's count, after the answer, is the last to move.
    wait_for("the delete counted", || {
        projector.metric("imageswap_pull_secret_writes_total{action=\"delete\"}") == Some(1.0)
    })
    .await;
    assert_eq!(
        fake.writes_to("/api/v1/namespaces/team-1/secrets"),
        2,
        "created, then deleted"
    );
    assert_eq!(
        projector.metric("imageswap_pull_secret_writes_total{action=\"delete\"}"),
        Some(1.0)
    );
    projector.stop().await;
}

#[tokio::test]
async fn a_rotated_source_updates_every_copy_and_a_deleted_one_removes_them() {
    let fake = FakeApiServer::start(NAMESPACE).await;
    cluster(&fake, 5);
    let projector = Projector::start(&fake, settings_for(&[PULL], "pod-a"));
    wait_for("5 copies", || copies(&fake, PULL).len() == 5).await;
    fake.clear_requests();
    fake.seed(&secrets_path(NAMESPACE), &source(PULL, "v2"));
    let hash = content_hash(&source(PULL, "v2"));
    wait_for("5 rotated copies", || all_have(&fake, 5, &hash)).await;
    assert_eq!(
        fake.writes_to("/api/v1/namespaces/team-"),
        5,
        "one update per namespace"
    );
    assert_eq!(copies(&fake, PULL)["team-0"].data, source(PULL, "v2").data);
    // A Secret of ours that is not a copy (no source annotation) stays.
    let mut unrelated = source("other", "x");
    unrelated.metadata.labels =
        Some([("app.kubernetes.io/managed-by".to_owned(), "imageswap".to_owned())].into());
    fake.seed(&secrets_path("team-0"), &unrelated);
    fake.remove(&secrets_path(NAMESPACE), PULL);
    wait_for("copies removed", || copies(&fake, PULL).is_empty()).await;
    assert!(
        fake.get::<Secret>(&secrets_path("team-0"), "other").is_some(),
        "only copies are removed"
    );
    projector.stop().await;
}

#[tokio::test]
async fn a_foreign_secret_is_never_touched_and_is_reported_once() {
    let fake = FakeApiServer::start(NAMESPACE).await;
    cluster(&fake, 3);
    let foreign = source(PULL, "theirs");
    fake.seed(&secrets_path("team-2"), &foreign);
    let projector = Projector::start(&fake, settings_for(&[PULL], "pod-a"));
    wait_for("the other copies", || copies(&fake, PULL).len() == 2).await;
    wait_for("the conflict metric", || {
        projector.metric("imageswap_pull_secret_copies{state=\"conflict\"}") == Some(1.0)
    })
    .await;
    // Several passes (rechecks every 300 ms, nudges) later: still theirs,
    // never written, and one Event.
    nudge(&fake, 1).await;
    nudge(&fake, 2).await;
    let kept: Secret = fake.get(&secrets_path("team-2"), PULL).unwrap();
    assert_eq!(kept.data, foreign.data);
    assert!(kept.metadata.labels.is_none());
    assert_eq!(fake.writes_to("/api/v1/namespaces/team-2/secrets/"), 0);
    let events: Vec<Event> = fake.list(&events_path("team-2"));
    assert_eq!(events.len(), 1, "one Event: {events:?}");
    assert_eq!(events[0].reason.as_deref(), Some("PullSecretConflict"));
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert_eq!(events[0].involved_object.kind.as_deref(), Some("Namespace"));
    // Their secret goes: the recheck lets our copy in.
    fake.remove(&secrets_path("team-2"), PULL);
    wait_for("our copy in team-2", || {
        copies(&fake, PULL).contains_key("team-2")
    })
    .await;
    wait_for("no conflict left", || {
        projector.metric("imageswap_pull_secret_copies{state=\"conflict\"}") == Some(0.0)
    })
    .await;
    projector.stop().await;
}

#[tokio::test]
async fn entries_removed_from_the_setting_lose_their_copies_only() {
    let fake = FakeApiServer::start(NAMESPACE).await;
    cluster(&fake, 3);
    fake.seed(&secrets_path(NAMESPACE), &source("quay-pull", "q"));
    let first = Projector::start(&fake, settings_for(&[PULL, "quay-pull"], "pod-a"));
    wait_for("both secrets copied", || {
        copies(&fake, PULL).len() == 3 && copies(&fake, "quay-pull").len() == 3
    })
    .await;
    first.stop().await;
    fake.clear_requests();
    // The pod restarts with one entry less.
    let second = Projector::start(&fake, settings_for(&[PULL], "pod-a"));
    wait_for("quay-pull copies removed", || {
        copies(&fake, "quay-pull").is_empty()
    })
    .await;
    assert_eq!(copies(&fake, PULL).len(), 3);
    assert_eq!(
        fake.writes_to("/api/v1/namespaces/team-"),
        3,
        "three deletes, nothing else"
    );
    second.stop().await;
}

#[tokio::test]
async fn a_terminating_namespace_is_left_alone_without_an_error_loop() {
    let fake = FakeApiServer::start(NAMESPACE).await;
    cluster(&fake, 2);
    let projector = Projector::start(&fake, settings_for(&[PULL], "pod-a"));
    wait_for("2 copies", || copies(&fake, PULL).len() == 2).await;
    fake.terminate_namespace("team-1");
    // While terminating, a rotation updates the others; team-1 gets no
    // write (its content is being deleted) and no pass fails.
    fake.clear_requests();
    fake.seed(&secrets_path(NAMESPACE), &source(PULL, "v2"));
    let hash = content_hash(&source(PULL, "v2"));
    wait_for("team-0 rotated", || {
        copies(&fake, PULL)["team-0"]
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HASH_ANNOTATION))
            == Some(&hash)
    })
    .await;
    fake.finish_namespace_deletion("team-1");
    nudge(&fake, 1).await;
    assert_eq!(fake.write_attempts_to("/api/v1/namespaces/team-1/"), 0);
    assert_eq!(
        projector.metric("imageswap_pull_secret_reconcile_errors_total"),
        Some(0.0)
    );
    projector.stop().await;
}

#[tokio::test]
async fn an_expired_watch_relists_and_keeps_following() {
    let fake = FakeApiServer::start(NAMESPACE).await;
    cluster(&fake, 2);
    let projector = Projector::start(&fake, settings_for(&[PULL], "pod-a"));
    wait_for("2 copies", || copies(&fake, PULL).len() == 2).await;
    let lists = |fake: &FakeApiServer| {
        fake.requests()
            .iter()
            .filter(|r| r.path == NAMESPACES_PATH && r.method == hyper::Method::GET)
            .count()
    };
    let before = lists(&fake);
    fake.expire_watches();
    // Resumed from its old version, the watch gets 410 and lists again.
    wait_for("a relist of the namespaces", || lists(&fake) > before).await;
    fake.seed(NAMESPACES_PATH, &namespace("team-late", true));
    wait_for("the copy after the relist", || {
        copies(&fake, PULL).contains_key("team-late")
    })
    .await;
    assert_eq!(
        projector.metric("imageswap_pull_secret_reconcile_errors_total"),
        Some(0.0)
    );
    projector.stop().await;
}

#[tokio::test]
async fn the_api_server_away_and_back_resyncs_without_duplicates() {
    let fake = FakeApiServer::start(NAMESPACE).await;
    cluster(&fake, 3);
    let projector = Projector::start(&fake, settings_for(&[PULL], "pod-a"));
    wait_for("3 copies", || copies(&fake, PULL).len() == 3).await;
    fake.set_reachable(false);
    wait_for("refused reconnects", || fake.refused() > 0).await;
    // Meanwhile: a new namespace, a rotation, a namespace unlabelled.
    fake.seed(NAMESPACES_PATH, &namespace("team-9", true));
    fake.seed(&secrets_path(NAMESPACE), &source(PULL, "v2"));
    fake.seed(NAMESPACES_PATH, &namespace("team-0", false));
    fake.clear_requests();
    fake.set_reachable(true);
    let hash = content_hash(&source(PULL, "v2"));
    wait_for("caught up", || {
        let found = copies(&fake, PULL);
        all_have(&fake, 3, &hash) && found.contains_key("team-9") && !found.contains_key("team-0")
    })
    .await;
    nudge(&fake, 1).await;
    // The watches come back one by one (each with its own backoff), so a
    // pass may see the rotation before the label change: a copy can be
    // written twice on the way, but never created twice.
    let creates = fake
        .requests_to("/api/v1/namespaces/team-9/secrets")
        .iter()
        .filter(|r| r.method == hyper::Method::POST && r.succeeded())
        .count();
    assert_eq!(creates, 1, "one create, no duplicate");
    assert!(
        projector
            .metric("imageswap_pull_secret_reconcile_errors_total")
            .unwrap_or_default()
            >= 1.0
    );
    // The first nudge labelled team-0 again: its copy comes back, a write
    // that can land after the nudge's wait on a busy machine (CI once
    // counted it below). And a watch still backing off would leave its
    // store behind, so a pass could write what is already there: all three
    // (namespaces, copies, the source) back before the claim.
    wait_for("team-0's copy back", || all_have(&fake, 4, &hash)).await;
    wait_for("the three watches back", || fake.open_watches() == 3).await;
    // Caught up: nothing more to write.
    fake.clear_requests();
    nudge(&fake, 2).await;
    let writes: Vec<_> = fake
        .requests_to("/api/v1/namespaces/")
        .into_iter()
        .filter(|r| r.is_write())
        .collect();
    assert!(writes.is_empty(), "in sync, yet written: {writes:?}");
    projector.stop().await;
}

#[tokio::test]
async fn three_replicas_write_each_copy_once_and_nothing_in_sync() {
    let fake = FakeApiServer::start(NAMESPACE).await;
    let n = 30;
    cluster(&fake, n);
    let replicas: Vec<Projector> = ["pod-a", "pod-b", "pod-c"]
        .iter()
        .map(|pod| Projector::start(&fake, settings_for(&[PULL], pod)))
        .collect();
    let hash = content_hash(&source(PULL, "v1"));
    wait_for("first sync", || all_have(&fake, n, &hash)).await;
    nudge(&fake, 1).await;
    assert_eq!(
        fake.writes_to("/api/v1/namespaces/team-"),
        n,
        "first sync: one create per namespace"
    );
    fake.clear_requests();
    nudge(&fake, 2).await;
    assert_eq!(
        fake.write_attempts_to("/api/v1/namespaces/"),
        0,
        "in sync: no write from any replica"
    );
    fake.seed(&secrets_path(NAMESPACE), &source(PULL, "v2"));
    let hash = content_hash(&source(PULL, "v2"));
    wait_for("rotated", || all_have(&fake, n, &hash)).await;
    nudge(&fake, 3).await;
    assert_eq!(
        fake.writes_to("/api/v1/namespaces/team-"),
        n,
        "a rotation: one update per namespace"
    );
    // No fight: afterwards nobody writes again.
    fake.clear_requests();
    nudge(&fake, 4).await;
    assert_eq!(fake.write_attempts_to("/api/v1/namespaces/"), 0);
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test]
async fn the_sidecar_runs_the_projection_when_it_is_on() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    cluster(&fake, 2);
    let root = tempfile::tempdir().unwrap();
    let settings = InitSettings {
        project_pull_secrets: Projection::On,
        pull_secrets: PullSecrets::parse_setting(&format!("harbor.example.com={PULL}")).unwrap(),
        watch_interval: Duration::from_millis(200),
        ..settings(root.path(), "pod-a")
    };
    let metrics = Arc::new(InitMetrics::new());
    let (stop, stopped) = oneshot::channel::<()>();
    let client = fake.client();
    let task = tokio::spawn(async move {
        watch_with(client, &settings, metrics, |_| {}, async move {
            let _ = stopped.await;
        })
        .await
    });
    wait_for("the sidecar's copies", || copies(&fake, PULL).len() == 2).await;
    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the sidecar stops")
        .unwrap()
        .expect("the sidecar succeeds");
}

#[tokio::test]
async fn projection_is_off_by_default() {
    install_crypto_provider();
    let fake = FakeApiServer::start(NAMESPACE).await;
    cluster(&fake, 2);
    let root = tempfile::tempdir().unwrap();
    let settings = InitSettings {
        pull_secrets: PullSecrets::parse_setting(&format!("harbor.example.com={PULL}")).unwrap(),
        watch_interval: Duration::from_millis(100),
        ..settings(root.path(), "pod-a")
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let client = fake.client();
    let task = tokio::spawn(async move {
        watch_with(
            client,
            &settings,
            Arc::new(InitMetrics::new()),
            |_| {},
            async move {
                let _ = stopped.await;
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(copies(&fake, PULL).is_empty());
    assert!(
        fake.requests()
            .iter()
            .all(|r| !r.path.starts_with(NAMESPACES_PATH) || r.path.contains(NAMESPACE)),
        "no namespace watch when off"
    );
}

/// The figures of docs/verify.md ("Distributing the pull secret", measured):
/// 1,000 selected namespaces and 4,000 other secrets at start, then new
/// namespaces one at a time. Prints, asserts only the write counts.
/// `cargo nextest run --locked --run-ignored only -E 'test(/measure_projection/)' --no-capture`
#[tokio::test]
#[ignore = "a measurement: run by hand"]
async fn measure_projection_at_a_thousand_namespaces() {
    let fake = FakeApiServer::start(NAMESPACE).await;
    let n: usize = std::env::var("MEASURE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    cluster(&fake, n);
    for i in 0..4 * n {
        fake.seed(
            &secrets_path(&format!("team-{}", i % n)),
            &source(&format!("app-{i}"), "x"),
        );
    }
    let started = std::time::Instant::now();
    let projector = Projector::start(&fake, settings_for(&[PULL], "pod-a"));
    let hash = content_hash(&source(PULL, "v1"));
    wait_for("first sync", || copies(&fake, PULL).len() == n).await;
    let first_sync = started.elapsed();
    nudge(&fake, 1).await;
    let creates = fake.writes_to("/api/v1/namespaces/team-");
    assert_eq!(creates, n);
    let mut latencies = Vec::new();
    for i in 0..25 {
        let name = format!("late-{i}");
        let path = secrets_path(&name);
        let labelled = std::time::Instant::now();
        fake.seed(NAMESPACES_PATH, &namespace(&name, true));
        while fake.get::<Secret>(&path, PULL).is_none() {
            assert!(
                labelled.elapsed() < DEADLINE,
                "{}\n{:?}",
                projector.metrics.encode(),
                fake.requests().iter().rev().take(10).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(labelled.elapsed());
    }
    latencies.sort();
    fake.clear_requests();
    nudge(&fake, 2).await;
    let in_sync = fake.write_attempts_to("/api/v1/namespaces/");
    assert_eq!(in_sync, 0);
    fake.clear_requests();
    fake.seed(&secrets_path(NAMESPACE), &source(PULL, "v2"));
    let rotated = std::time::Instant::now();
    let hash2 = content_hash(&source(PULL, "v2"));
    wait_for("rotation", || all_have(&fake, n + 25, &hash2)).await;
    let rotation = rotated.elapsed();
    nudge(&fake, 3).await;
    let rotation_writes = fake.writes_to("/api/v1/namespaces/");
    assert_eq!(rotation_writes, n + 25);
    let _ = hash;
    println!(
        "first sync of {n} namespaces: {first_sync:?}, {creates} creates; label → copy over 25 new \
         namespaces: median {:?}, max {:?}; in sync: {in_sync} writes; rotation: {rotation_writes} \
         writes in {rotation:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    projector.stop().await;
}
