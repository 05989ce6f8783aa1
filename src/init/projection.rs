//! Pull secret projection (issue 23): with `IMAGESWAP_PROJECT_PULL_SECRETS=on`,
//! `init --watch` keeps, for every entry `REGISTRY=SECRET` of
//! `IMAGESWAP_IMAGE_PULL_SECRETS`, a copy of `<IMAGESWAP_NAMESPACE_NAME>/SECRET`
//! in every namespace `IMAGESWAP_PROJECT_NAMESPACE_SELECTOR` selects, so the
//! `imagePullSecrets` entry the webhook adds names a Secret that exists where
//! the pod runs.
//!
//! # How
//!
//! `kube::runtime` watchers, each feeding a reflector store: the selected
//! namespaces (by the selector), each source (by a `metadata.name` field
//! selector in our namespace) and our copies (by the label
//! `app.kubernetes.io/managed-by=imageswap`, cluster-wide). Never every Secret
//! of the cluster: a Secret of the wanted name that is not ours shows up as a
//! `409 AlreadyExists` on create, then one read.
//!
//! Every watch event marks the state dirty; after a short quiet time (a
//! relist is a burst of events) one level-based pass compares what should
//! exist with what the stores hold:
//!
//! - a wanted copy that is missing is created; one whose content-hash
//!   annotation differs from the source's is replaced (with the copy's
//!   `resourceVersion` as precondition); an equal one costs nothing (no write
//!   in sync);
//! - a copy of ours that is no longer wanted (source deleted, entry removed
//!   from the setting, namespace no longer selected) is deleted, with its uid
//!   as precondition; copies in a terminating namespace are left to the
//!   namespace's deletion, and no copy is created there (the API server
//!   would refuse it on every pass);
//! - a foreign Secret of the wanted name is never touched: one WARN line,
//!   `imageswap_pull_secret_copies{state="conflict"}` and a Warning Event on
//!   the namespace, once; it is tried again (a create the API server
//!   refuses with `409`, then one read) every `IMAGESWAP_WATCH_INTERVAL`, so
//!   deleting it lets the copy in.
//! - A copy whose source changed `type` cannot be replaced (the field is
//!   immutable): that pass fails and is retried with backoff; delete the
//!   copies (`-l app.kubernetes.io/managed-by=imageswap`) to have them made
//!   again with the new type.
//!
//! A pass that fails is retried with backoff (1 s doubling to five minutes);
//! the watchers relist by themselves after an expired watch (`410 Gone`) or
//! an API server that was away, and the pass after that puts right whatever
//! changed meanwhile.
//!
//! # Several replicas
//!
//! Every replica's sidecar runs the same reconciler, without an election:
//! the writes are idempotent. All replicas compute the same copy from the
//! same source (the hash annotation is the only thing compared), so there is
//! nothing to fight over; in sync nobody writes; after a rotation each copy
//! is replaced once, the other replicas' replacements failing on the
//! `resourceVersion` precondition (`409`, not an error: their store then
//! receives the new copy, which is in sync). Creates race the same way
//! (`409 AlreadyExists`, one read that finds our copy). This avoids a Lease's
//! extra writes (one renewal every few seconds, forever, for a secret that
//! changes a few times a year) and its failover delay.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, EventSource, Namespace, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use super::api_error::ApiError;
use super::settings::{InitSettings, Projection};
use super::unix_now;
use crate::telemetry::metrics::{CopyAction, InitMetrics};

/// The label every copy carries; the copies' watch selects on it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "imageswap");
/// `<namespace>/<name>` of the source a copy was made from: a Secret with the
/// label but without this annotation is not a copy (so not ours to delete).
pub const SOURCE_ANNOTATION: &str = "imageswap.k8s.twr.io/pull-secret-source";
/// The SHA-256 of the source's type and data when the copy was written.
pub const HASH_ANNOTATION: &str = "imageswap.k8s.twr.io/pull-secret-hash";
/// The Event reason of a foreign Secret in the way.
pub const CONFLICT_REASON: &str = "PullSecretConflict";

/// Quiet time after a watch event before a pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What the reconciler needs from the settings.
#[derive(Clone, Debug)]
pub struct ProjectionSettings {
    /// Where the sources are (ImageSwap's own namespace).
    pub namespace: String,
    /// The source Secrets' names, each once.
    pub secrets: Vec<String>,
    pub selector: String,
    /// How often a foreign Secret in the way is looked at again.
    pub recheck: Duration,
    pub pod_name: String,
}

impl ProjectionSettings {
    /// `None` when projection is off.
    pub fn from_init(settings: &InitSettings) -> Option<ProjectionSettings> {
        if settings.project_pull_secrets == Projection::Off {
            return None;
        }
        let secrets: BTreeSet<String> = settings
            .pull_secrets
            .entries()
            .map(|(_, secret)| secret.to_owned())
            .collect();
        Some(ProjectionSettings {
            namespace: settings.namespace.clone(),
            secrets: secrets.into_iter().collect(),
            selector: settings.project_namespace_selector.clone(),
            recheck: settings.watch_interval,
            pod_name: settings.pod_name.clone(),
        })
    }
}

/// What one pass found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassCounts {
    pub in_sync: usize,
    pub conflicts: usize,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Writes another replica made first (a precondition or create lost).
    pub raced: usize,
}

/// Runs the reconciler until `shutdown` completes. Never returns an error:
/// failures are logged, counted and retried.
pub async fn run(
    client: Client,
    settings: ProjectionSettings,
    metrics: Arc<InitMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    if settings.secrets.is_empty() {
        info!(
            "IMAGESWAP_PROJECT_PULL_SECRETS is on but IMAGESWAP_IMAGE_PULL_SECRETS names no secret; \
             only removing copies left from an earlier setting."
        );
    }
    info!(
        secrets = %settings.secrets.join(","),
        selector = %settings.selector,
        "Projecting the pull secrets into the selected namespaces."
    );
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    let (copies, copy_writer) = reflector::store::<Secret>();
    let mut streams: Vec<BoxStream<'static, (usize, Result<Phase, watcher::Error>)>> = Vec::new();
    let ns_watch = watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default().labels(&settings.selector),
    );
    streams.push(tagged(0, reflector::reflector(ns_writer, ns_watch)));
    let (key, value) = MANAGED_BY;
    let copy_watch = watcher(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(&format!("{key}={value}")),
    );
    streams.push(tagged(1, reflector::reflector(copy_writer, copy_watch)));
    let mut sources = Vec::new();
    for (i, name) in settings.secrets.iter().enumerate() {
        let (store, writer) = reflector::store::<Secret>();
        let watch = watcher(
            Api::<Secret>::namespaced(client.clone(), &settings.namespace),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        );
        streams.push(tagged(i + 2, reflector::reflector(writer, watch)));
        sources.push((name.clone(), store));
    }
    let mut ready = vec![false; streams.len()];
    // The watches are driven by a task of their own, so the stores keep
    // following while a pass waits on the API server (a pass that creates a
    // thousand copies would otherwise find none of them in the store next
    // time, and try them all again).
    let mut merged = futures::stream::select_all(streams);
    let (forward, mut events) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(item) = merged.next().await {
            if forward.send(item).is_err() {
                break;
            }
        }
    });
    let mut reconciler = Reconciler::new(client, settings, metrics);
    let mut dirty = false;
    let mut watch_failing = false;
    let mut failures: u32 = 0;
    let mut next_recheck = tokio::time::Instant::now() + reconciler.settings.recheck;
    let mut retry_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let all_ready = ready.iter().all(|r| *r);
        let wake = match (dirty && all_ready, retry_at) {
            (true, _) => Some(tokio::time::Instant::now() + DEBOUNCE),
            (false, Some(at)) => Some(at),
            (false, None) => None,
        };
        tokio::select! {
            // Every event already there before a pass: the quiet time only
            // runs out when none is waiting.
            biased;
            () = &mut shutdown => break,
            item = events.recv() => match item {
                Some((index, Ok(phase))) => {
                    if watch_failing {
                        info!("The pull secret watches are back.");
                        watch_failing = false;
                    }
                    // A relist (first start, 410, reconnect) makes its store
                    // partial until done: no pass compares half a picture.
                    match phase {
                        Phase::Listing => ready[index] = false,
                        Phase::Listed => ready[index] = true,
                        Phase::Change => {}
                    }
                    dirty = true;
                    continue;
                }
                Some((_, Err(err))) if is_expired(&err) => {
                    debug!("A pull secret watch expired (410 Gone); listing again.");
                    continue;
                }
                Some((_, Err(err))) => {
                    if !watch_failing {
                        warn!("A pull secret watch failed, retrying with backoff: {err}.");
                        metrics_error(&reconciler.metrics);
                        watch_failing = true;
                    }
                    continue;
                }
                None => break,
            },
            () = sleep_until_opt(wake) => {}
            () = tokio::time::sleep_until(next_recheck), if all_ready => {
                reconciler.recheck_conflicts = true;
                next_recheck = tokio::time::Instant::now() + reconciler.settings.recheck;
            }
        }
        // Collect what arrived during the quiet time before looking.
        dirty = false;
        retry_at = None;
        match reconciler.pass(&namespaces, &sources, &copies).await {
            Ok(counts) => {
                if failures > 0 {
                    info!(
                        failed_passes = failures,
                        "The pull secret projection succeeded again."
                    );
                }
                failures = 0;
                debug!(?counts, "Pull secret projection pass.");
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                warn!(
                    failures,
                    retry_in = %humantime::format_duration(wait),
                    "The pull secret projection failed: {err}."
                );
                retry_at = Some(tokio::time::Instant::now() + wait);
            }
        }
    }
    driver.abort();
    info!("Stopping the pull secret projection.");
}

fn metrics_error(metrics: &InitMetrics) {
    metrics.pull_secret_pass(false, unix_now());
}

fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = watcher::Result<WatchEvent<K>>> + Send
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher::watcher(api, config).default_backoff()
}

/// Where a watch stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A (re)list began: the store is incomplete until `Listed`.
    Listing,
    Listed,
    Change,
}

/// A watch stream as `(index, Ok(phase) | Err)`.
fn tagged<K: Send + 'static>(
    index: usize,
    stream: impl futures::Stream<Item = watcher::Result<WatchEvent<K>>> + Send + 'static,
) -> BoxStream<'static, (usize, Result<Phase, watcher::Error>)> {
    stream
        .map(move |event| {
            let phase = event.map(|event| match event {
                WatchEvent::Init => Phase::Listing,
                WatchEvent::InitDone => Phase::Listed,
                _ => Phase::Change,
            });
            (index, phase)
        })
        .boxed()
}

/// `410 Gone`: the watch's version was compacted away; the watcher lists
/// again by itself, which is routine, not a failure.
fn is_expired(err: &watcher::Error) -> bool {
    matches!(err, watcher::Error::WatchError(status) if status.code == 410)
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The state between passes.
struct Reconciler {
    client: Client,
    settings: ProjectionSettings,
    metrics: Arc<InitMetrics>,
    /// Foreign Secrets in the way, already reported.
    conflicts: BTreeSet<(String, String)>,
    /// The next pass looks at every reported conflict again.
    recheck_conflicts: bool,
}

/// A copy that should exist.
struct Wanted<'a> {
    source: &'a Secret,
    hash: String,
}

impl Reconciler {
    fn new(client: Client, settings: ProjectionSettings, metrics: Arc<InitMetrics>) -> Reconciler {
        Reconciler {
            client,
            settings,
            metrics,
            conflicts: BTreeSet::new(),
            recheck_conflicts: false,
        }
    }

    async fn pass(
        &mut self,
        namespaces: &Store<Namespace>,
        sources: &[(String, Store<Secret>)],
        copies: &Store<Secret>,
    ) -> Result<PassCounts, ApiError> {
        let mut counts = PassCounts::default();
        let live: Vec<Arc<Namespace>> = namespaces.state();
        let terminating: BTreeSet<String> = live
            .iter()
            .filter(|ns| is_terminating(ns))
            .map(|ns| ns.name_any())
            .collect();
        let mut sources_now: BTreeMap<&str, Arc<Secret>> = BTreeMap::new();
        for (name, store) in sources {
            if let Some(secret) = store.state().into_iter().find(|s| s.name_any() == *name) {
                sources_now.insert(name, secret);
            }
        }
        let mut wanted: BTreeMap<(String, String), Wanted<'_>> = BTreeMap::new();
        for ns in &live {
            let ns_name = ns.name_any();
            if ns_name == self.settings.namespace || terminating.contains(&ns_name) {
                continue;
            }
            for (name, source) in &sources_now {
                wanted.insert(
                    (ns_name.clone(), (*name).to_owned()),
                    Wanted {
                        source,
                        hash: content_hash(source),
                    },
                );
            }
        }
        let ours: BTreeMap<(String, String), Arc<Secret>> = copies
            .state()
            .into_iter()
            .filter(|s| is_ours(s))
            .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s))
            .collect();
        let recheck = std::mem::take(&mut self.recheck_conflicts);
        self.conflicts.retain(|key| wanted.contains_key(key));
        for (key, want) in &wanted {
            match ours.get(key) {
                Some(copy) if copy.annotations().get(HASH_ANNOTATION) == Some(&want.hash) => {
                    counts.in_sync += 1;
                }
                Some(copy) => {
                    self.update(key, want, copy.resource_version(), &mut counts)
                        .await?;
                }
                None if self.conflicts.contains(key) && !recheck => counts.conflicts += 1,
                None => self.create(key, want, &mut counts).await?,
            }
        }
        for (key, copy) in &ours {
            if wanted.contains_key(key) || terminating.contains(&key.0) {
                continue;
            }
            self.delete(key, copy, &mut counts).await?;
        }
        self.metrics.pull_secret_copies(counts.in_sync, counts.conflicts);
        self.metrics.pull_secret_pass(true, unix_now());
        Ok(counts)
    }

    fn api(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn create(
        &mut self,
        key: &(String, String),
        want: &Wanted<'_>,
        counts: &mut PassCounts,
    ) -> Result<(), ApiError> {
        let (namespace, name) = key;
        let copy = self.copy_of(namespace, name, want, None);
        match self.api(namespace).create(&PostParams::default(), &copy).await {
            Ok(_) => {
                self.conflicts.remove(key);
                self.metrics.pull_secret_write(CopyAction::create);
                info!(%namespace, secret = %name, "Created the pull secret copy.");
                counts.created += 1;
                counts.in_sync += 1;
                Ok(())
            }
            Err(err) => {
                let err = ApiError::from(err);
                if is_terminating_refusal(&err) {
                    debug!(%namespace, "The namespace is terminating; no pull secret copy.");
                    return Ok(());
                }
                if !err.is_already_exists() {
                    return Err(err);
                }
                // Another replica's copy (our store has not seen it yet) or a
                // foreign Secret: one read tells.
                let existing = self.api(namespace).get_opt(name).await.map_err(ApiError::from)?;
                match existing {
                    None => Ok(()), // deleted meanwhile: the next pass creates it
                    Some(existing) if is_ours(&existing) => {
                        counts.raced += 1;
                        if existing.annotations().get(HASH_ANNOTATION) == Some(&want.hash) {
                            counts.in_sync += 1;
                            Ok(())
                        } else {
                            self.update(key, want, existing.resource_version(), counts).await
                        }
                    }
                    Some(_) => {
                        counts.conflicts += 1;
                        if self.conflicts.insert(key.clone()) {
                            self.report_conflict(namespace, name).await;
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    async fn update(
        &mut self,
        key: &(String, String),
        want: &Wanted<'_>,
        resource_version: Option<String>,
        counts: &mut PassCounts,
    ) -> Result<(), ApiError> {
        let (namespace, name) = key;
        let copy = self.copy_of(namespace, name, want, resource_version);
        match self
            .api(namespace)
            .replace(name, &PostParams::default(), &copy)
            .await
        {
            Ok(_) => {
                self.metrics.pull_secret_write(CopyAction::update);
                info!(%namespace, secret = %name, "Updated the pull secret copy (the source changed).");
                counts.updated += 1;
                counts.in_sync += 1;
                Ok(())
            }
            Err(err) => {
                let err = ApiError::from(err);
                // Another replica replaced it first (or removed it): the
                // watch brings its result, which the next pass compares.
                if err.is_conflict() || err.is_not_found() {
                    counts.raced += 1;
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn delete(
        &mut self,
        key: &(String, String),
        copy: &Secret,
        counts: &mut PassCounts,
    ) -> Result<(), ApiError> {
        let (namespace, name) = key;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: copy.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api(namespace).delete(name, &params).await {
            Ok(_) => {
                self.metrics.pull_secret_write(CopyAction::delete);
                info!(%namespace, secret = %name, "Deleted the pull secret copy (no longer wanted).");
                counts.deleted += 1;
                Ok(())
            }
            Err(err) => {
                let err = ApiError::from(err);
                if err.is_not_found() || err.is_conflict() {
                    counts.raced += 1;
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// The copy of `want`'s source as `namespace/name`.
    fn copy_of(
        &self,
        namespace: &str,
        name: &str,
        want: &Wanted<'_>,
        resource_version: Option<String>,
    ) -> Secret {
        let (key, value) = MANAGED_BY;
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some([(key.to_owned(), value.to_owned())].into()),
                annotations: Some(
                    [
                        (
                            SOURCE_ANNOTATION.to_owned(),
                            format!("{}/{name}", self.settings.namespace),
                        ),
                        (HASH_ANNOTATION.to_owned(), want.hash.clone()),
                    ]
                    .into(),
                ),
                resource_version,
                ..ObjectMeta::default()
            },
            type_: want.source.type_.clone(),
            data: want.source.data.clone(),
            ..Secret::default()
        }
    }

    /// A foreign Secret is in the way: said once, as a WARN line and an
    /// Event on the namespace (the metric counts it on every pass).
    async fn report_conflict(&self, namespace: &str, name: &str) {
        warn!(
            %namespace,
            secret = %name,
            "A Secret of the pull secret's name that ImageSwap did not create is in the way; \
             leaving it alone (pods there pull with it). Delete it to get ImageSwap's copy."
        );
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some("imageswap-pull-secret-".to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Namespace".to_owned()),
                name: Some(namespace.to_owned()),
                ..ObjectReference::default()
            },
            reason: Some(CONFLICT_REASON.to_owned()),
            message: Some(format!(
                "Secret {name} exists and was not created by ImageSwap; it is left alone and not \
                 replaced by the copy of {}/{name}",
                self.settings.namespace
            )),
            type_: Some("Warning".to_owned()),
            source: Some(EventSource {
                component: Some("imageswap".to_owned()),
                host: None,
            }),
            reporting_component: Some("imageswap".to_owned()),
            reporting_instance: Some(self.settings.pod_name.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some("Project".to_owned()),
            count: Some(1),
            ..Event::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        if let Err(err) = events.create(&PostParams::default(), &event).await {
            warn!(%namespace, "Cannot record the pull secret conflict as an Event: {}.", ApiError::from(err));
        }
    }
}

/// A copy ImageSwap made: the label and the source annotation.
fn is_ours(secret: &Secret) -> bool {
    let (key, value) = MANAGED_BY;
    secret.labels().get(key).map(String::as_str) == Some(value)
        && secret.annotations().contains_key(SOURCE_ANNOTATION)
}

fn is_terminating(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        || namespace
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref())
            == Some("Terminating")
}

/// `403 Forbidden … because it is being terminated`: the namespace went
/// away between its watch event and the create.
fn is_terminating_refusal(err: &ApiError) -> bool {
    err.status()
        .is_some_and(|status| status.code == 403 && status.message.contains("being terminated"))
}

/// SHA-256 (hex) of the source's type and data, keys in order.
pub fn content_hash(source: &Secret) -> String {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(source.type_.as_deref().unwrap_or("Opaque").as_bytes());
    digest.update(&[0]);
    for (key, ByteString(value)) in source.data.iter().flatten() {
        digest.update(key.as_bytes());
        digest.update(&[0]);
        digest.update(&(value.len() as u64).to_be_bytes());
        digest.update(value);
    }
    let mut hex = String::with_capacity(64);
    for byte in digest.finish().as_ref() {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: &[(&str, &[u8])]) -> Secret {
        Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn the_hash_follows_the_content_only() {
        let a = content_hash(&secret(&[(".dockerconfigjson", b"{\"auths\":{}}")]));
        let mut renamed = secret(&[(".dockerconfigjson", b"{\"auths\":{}}")]);
        renamed.metadata.name = Some("other".into());
        renamed.metadata.resource_version = Some("7".into());
        assert_eq!(a, content_hash(&renamed));
        assert_ne!(
            a,
            content_hash(&secret(&[(".dockerconfigjson", b"{\"auths\":{\"x\":{}}}")]))
        );
        // Keys and values cannot be shifted into one another.
        assert_ne!(
            content_hash(&secret(&[("ab", b"c")])),
            content_hash(&secret(&[("a", b"bc")]))
        );
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
