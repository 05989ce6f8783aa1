//! An in-process fake of the few Kubernetes API endpoints `imageswap init`
//! uses: a hyper 1 server on 127.0.0.1 keeping objects in memory and behaving
//! like the real API server where it matters to `init`:
//!
//! - bodies are decoded into, and answered from, k8s-openapi types (real JSON
//!   shapes; a malformed body is a `400`, an invalid object a `422`);
//! - missing objects answer a `404` Status, a create of an existing name a
//!   `409 AlreadyExists`, an update with a stale `resourceVersion` a
//!   `409 Conflict`; every write bumps `resourceVersion`;
//! - MutatingWebhookConfigurations get the API server's defaults, so "the
//!   live object has more fields than the template" is exercised;
//! - a Secret's `type` is immutable;
//! - CSRs have the `approval` subresource (duplicate condition types are
//!   rejected), and a signer that, after approval, fills `status.certificate`
//!   asynchronously with a test CA, never signs, or marks the CSR failed.
//!
//! - namespaces (with a terminating state that refuses new content), Events
//!   (`generateName`), and `list` / `watch` of namespaces and secrets (also
//!   across namespaces) as the API server serves them: `labelSelector` and
//!   `fieldSelector` (equality terms), a list's `resourceVersion`, then a
//!   stream of `ADDED` / `MODIFIED` / `DELETED` events from a given version
//!   (an object leaving a watch's selector is `DELETED` to it), `BOOKMARK`s
//!   when asked for, and `410 Gone` for a version older than the compacted
//!   history ([`FakeApiServer::expire_watches`]).
//!
//! Every request is recorded (method, path, status) so tests count writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::ca::TestCa;

pub const CSR_PATH: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
pub const MWC_PATH: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

pub fn secrets_path(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/secrets")
}

pub const NAMESPACES_PATH: &str = "/api/v1/namespaces";

pub fn events_path(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/events")
}

pub fn configmaps_path(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/configmaps")
}

/// What the fake signer does with an approved CSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignerMode {
    /// Sign with the test CA, valid for a year, after a short delay.
    Sign,
    /// Never touch it (a cluster without that signer).
    Never,
    /// Add a `Failed` condition (a signer refusing the request).
    Fail,
}

/// One request the fake answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub status: u16,
}

impl Recorded {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }

    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Secret,
    ConfigMap,
    Csr,
    Mwc,
    Namespace,
    Event,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Secret | Kind::ConfigMap | Kind::Namespace | Kind::Event => "v1",
            Kind::Csr => "certificates.k8s.io/v1",
            Kind::Mwc => "admissionregistration.k8s.io/v1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Csr => "CertificateSigningRequest",
            Kind::Mwc => "MutatingWebhookConfiguration",
            Kind::Namespace => "Namespace",
            Kind::Event => "Event",
        }
    }

    /// `resource.group` as the API server names it in messages.
    fn resource(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::Csr => "certificatesigningrequests.certificates.k8s.io",
            Kind::Mwc => "mutatingwebhookconfigurations.admissionregistration.k8s.io",
            Kind::Namespace => "namespaces",
            Kind::Event => "events",
        }
    }

    /// Decodes into the k8s-openapi type and back: unknown fields dropped,
    /// wrong shapes rejected, as the API server's decoder does.
    fn normalize(self, value: Value) -> Result<Value, String> {
        fn round_trip<T: DeserializeOwned + Serialize>(value: Value) -> Result<Value, String> {
            let typed: T = serde_json::from_value(value).map_err(|err| err.to_string())?;
            serde_json::to_value(typed).map_err(|err| err.to_string())
        }
        match self {
            Kind::Secret => round_trip::<Secret>(value),
            Kind::ConfigMap => round_trip::<ConfigMap>(value),
            Kind::Csr => round_trip::<CertificateSigningRequest>(value),
            Kind::Mwc => round_trip::<MutatingWebhookConfiguration>(value),
            Kind::Namespace => round_trip::<Namespace>(value),
            Kind::Event => round_trip::<Event>(value),
        }
    }
}

struct Route {
    kind: Kind,
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').filter(|segment| !segment.is_empty()).collect();
    let (kind, namespace, prefix_len) = match segments.as_slice() {
        ["api", "v1", "namespaces", namespace, "secrets", ..] => (Kind::Secret, Some(*namespace), 5),
        ["api", "v1", "namespaces", namespace, "configmaps", ..] => (Kind::ConfigMap, Some(*namespace), 5),
        ["api", "v1", "namespaces", namespace, "events", ..] => (Kind::Event, Some(*namespace), 5),
        // Secrets of every namespace (list and watch only).
        ["api", "v1", "secrets"] => (Kind::Secret, None, 3),
        ["api", "v1", "namespaces", ..] => (Kind::Namespace, None, 3),
        [
            "apis",
            "certificates.k8s.io",
            "v1",
            "certificatesigningrequests",
            ..,
        ] => (Kind::Csr, None, 4),
        [
            "apis",
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            ..,
        ] => (Kind::Mwc, None, 4),
        _ => return None,
    };
    let rest = &segments[prefix_len..];
    if rest.len() > 2 {
        return None;
    }
    Some(Route {
        kind,
        collection: format!("/{}", segments[..prefix_len].join("/")),
        namespace: namespace.map(str::to_owned),
        name: rest.first().map(|name| (*name).to_owned()),
        subresource: rest.get(1).map(|sub| (*sub).to_owned()),
    })
}

struct Store {
    /// (collection path, name) → object JSON.
    objects: BTreeMap<(String, String), Value>,
    next_resource_version: u64,
    next_uid: u64,
    /// Every change, oldest first, for watches from a `resourceVersion`.
    history: Vec<Change>,
    /// Watches from a version below this get `410 Gone`.
    compacted: u64,
    /// The open watches.
    watches: Vec<Watch>,
    /// Namespaces being deleted: creates in them are refused.
    terminating: std::collections::BTreeSet<String>,
}

/// One change of an object (created: no `old`; deleted: no `new`).
#[derive(Clone)]
struct Change {
    version: u64,
    kind: Kind,
    namespace: Option<String>,
    old: Option<Value>,
    new: Option<Value>,
}

/// What a list or watch asked for.
#[derive(Clone, Debug, Default)]
struct Query {
    watch: bool,
    resource_version: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    bookmarks: bool,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut parsed = Query::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            match key {
                "watch" => parsed.watch = value == "true" || value == "1",
                "resourceVersion" => parsed.resource_version = Some(value).filter(|v| !v.is_empty()),
                "labelSelector" => parsed.label_selector = Some(value),
                "fieldSelector" => parsed.field_selector = Some(value),
                "allowWatchBookmarks" => parsed.bookmarks = value == "true",
                _ => {}
            }
        }
        parsed
    }

    /// The object is in this list or watch (kind and namespace checked by
    /// the caller).
    fn selects(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label_ok = self.label_selector.as_deref().is_none_or(|selector| {
            terms(selector).all(|(key, op, value)| {
                let have = labels[key].as_str();
                match op {
                    "=" => have == Some(value),
                    "!=" => have != Some(value),
                    "exists" => have.is_some(),
                    _ => have.is_none(),
                }
            })
        });
        let field_ok = self.field_selector.as_deref().is_none_or(|selector| {
            terms(selector).all(|(key, op, value)| {
                let have = match key {
                    "metadata.name" => object["metadata"]["name"].as_str(),
                    "metadata.namespace" => object["metadata"]["namespace"].as_str(),
                    _ => None,
                };
                match op {
                    "=" => have == Some(value),
                    "!=" => have != Some(value),
                    _ => false,
                }
            })
        });
        label_ok && field_ok
    }
}

/// Equality-based selector terms as `(key, "=" | "!=" | "exists" | "absent", value)`.
fn terms(selector: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|term| {
            if let Some((key, value)) = term.split_once("!=") {
                (key.trim(), "!=", value.trim())
            } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (key.trim(), "=", value.trim())
            } else if let Some(key) = term.strip_prefix('!') {
                (key.trim(), "absent", "")
            } else {
                (term, "exists", "")
            }
        })
}

/// An open watch: its filter and the stream's sender.
struct Watch {
    kind: Kind,
    namespace: Option<String>,
    query: Query,
    sender: tokio::sync::mpsc::UnboundedSender<Bytes>,
}

impl Watch {
    /// The watch event for `change`, if this watch sees it: an object moving
    /// out of the selector is `DELETED`, into it `ADDED`.
    fn event_for(&self, change: &Change) -> Option<Value> {
        if change.kind != self.kind || (self.namespace.is_some() && change.namespace != self.namespace) {
            return None;
        }
        let was = change.old.as_ref().is_some_and(|old| self.query.selects(old));
        let is = change.new.as_ref().is_some_and(|new| self.query.selects(new));
        let (kind, object) = match (was, is) {
            (false, true) => ("ADDED", change.new.as_ref()?),
            (true, true) => ("MODIFIED", change.new.as_ref()?),
            (true, false) => match &change.new {
                // Left the selector: the watcher sees it go, at the new version.
                Some(new) => ("DELETED", new),
                None => {
                    let mut gone = change.old.clone()?;
                    gone["metadata"]["resourceVersion"] = json!(change.version.to_string());
                    return Some(json!({"type": "DELETED", "object": gone}));
                }
            },
            (false, false) => return None,
        };
        Some(json!({"type": kind, "object": object}))
    }

    fn bookmark(&self, version: u64) -> Option<Value> {
        self.query.bookmarks.then(|| {
            json!({
                "type": "BOOKMARK",
                "object": {
                    "kind": self.kind.kind(),
                    "apiVersion": self.kind.api_version(),
                    "metadata": {"resourceVersion": version.to_string()},
                },
            })
        })
    }
}

fn send(watch: &Watch, event: &Value) -> bool {
    let mut line = event.to_string();
    line.push('\n');
    watch.sender.send(Bytes::from(line)).is_ok()
}

impl Store {
    /// Records a change and tells the open watches (under the store's lock,
    /// so every watch sees changes in version order).
    fn changed(&mut self, kind: Kind, namespace: Option<&str>, old: Option<Value>, new: Option<Value>) {
        let change = Change {
            version: self.next_resource_version,
            kind,
            namespace: namespace.map(str::to_owned),
            old,
            new,
        };
        self.watches.retain(|watch| match watch.event_for(&change) {
            Some(event) => send(watch, &event),
            None => watch
                .bookmark(change.version)
                .is_none_or(|mark| send(watch, &mark)),
        });
        self.history.push(change);
    }
}

impl Store {
    fn bump(&mut self) -> String {
        self.next_resource_version += 1;
        self.next_resource_version.to_string()
    }
}

struct State {
    store: Mutex<Store>,
    requests: Mutex<Vec<Recorded>>,
    signer: Mutex<SignerMode>,
    /// The signer holds back until this many CSRs are approved.
    sign_barrier: Mutex<usize>,
    /// The signer controller's own latency: a real one signs a while after
    /// the approval, so `init`'s first look finds no certificate and it must
    /// wait for one. Behaviour of the fake, not a wait of the test's.
    sign_delay: Duration,
    ca: TestCa,
    /// Signs instead of `ca` once the test rotated the cluster CA.
    rotated_ca: Mutex<Option<Arc<TestCa>>>,
    /// How long the signer's certificates live (`None`: a year).
    cert_lifetime: Mutex<Option<Duration>>,
    /// `false`: every connection is dropped, as if the API server were down.
    reachable: std::sync::atomic::AtomicBool,
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the real failure behind poison.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The running fake; stops accepting connections when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

type Answer = (StatusCode, Value);

impl FakeApiServer {
    /// Starts the fake with the cluster CA (which is also the signer's CA)
    /// published as `kube-root-ca.crt` in `namespace`, as Kubernetes does in
    /// every namespace.
    pub async fn start(namespace: &str) -> Self {
        let ca = TestCa::new("fake cluster CA");
        let state = Arc::new(State {
            store: Mutex::new(Store {
                objects: BTreeMap::new(),
                next_resource_version: 1000,
                next_uid: 0,
                history: Vec::new(),
                compacted: 0,
                watches: Vec::new(),
                terminating: std::collections::BTreeSet::new(),
            }),
            requests: Mutex::new(Vec::new()),
            signer: Mutex::new(SignerMode::Sign),
            sign_barrier: Mutex::new(1),
            sign_delay: Duration::from_millis(50),
            ca,
            rotated_ca: Mutex::new(None),
            cert_lifetime: Mutex::new(None),
            reachable: std::sync::atomic::AtomicBool::new(true),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let addr = listener.local_addr().expect("fake API server address");
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                if !state.reachable.load(std::sync::atomic::Ordering::SeqCst) {
                    record_refused(&state);
                    drop(stream);
                    continue;
                }
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move {
                            // Down: close the kept-alive connection too.
                            if !state.reachable.load(std::sync::atomic::Ordering::SeqCst) {
                                record_refused(&state);
                                return Err(std::io::Error::other("the fake API server is down"));
                            }
                            Ok::<_, std::io::Error>(handle(state, request).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let server = Self { addr, state, accept };
        let mut root_ca = ConfigMap::default();
        root_ca.metadata.name = Some("kube-root-ca.crt".into());
        root_ca.data = Some([("ca.crt".to_owned(), server.ca().pem.clone())].into());
        server.seed(&configmaps_path(namespace), &root_ca);
        server
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for this fake, with `default` as its default namespace.
    pub fn client(&self) -> kube::Client {
        let url = self.url().parse().expect("fake API server URL");
        kube::Client::try_from(kube::Config::new(url)).expect("client for the fake API server")
    }

    /// The cluster CA and CSR signer.
    pub fn ca(&self) -> &TestCa {
        &self.state.ca
    }

    /// Rotates the signer to `ca`, as a cluster CA rotation does (the test
    /// updates `kube-root-ca.crt` itself, with [`FakeApiServer::set_cluster_ca`]).
    pub fn rotate_signer(&self, ca: TestCa) -> Arc<TestCa> {
        let ca = Arc::new(ca);
        *lock(&self.state.rotated_ca) = Some(ca.clone());
        ca
    }

    /// Publishes `pem` as `kube-root-ca.crt` in `namespace` (a new
    /// `resourceVersion`, as the controller-manager's update would).
    pub fn set_cluster_ca(&self, namespace: &str, pem: &str) {
        let mut root_ca = ConfigMap::default();
        root_ca.metadata.name = Some("kube-root-ca.crt".into());
        root_ca.data = Some([("ca.crt".to_owned(), pem.to_owned())].into());
        self.seed(&configmaps_path(namespace), &root_ca);
    }

    /// Certificates the signer issues from now on live `lifetime` (from the
    /// second of signing), instead of a year.
    pub fn set_cert_lifetime(&self, lifetime: Duration) {
        *lock(&self.state.cert_lifetime) = Some(lifetime);
    }

    /// Takes the fake down (`false`: every connection, new or kept alive, is
    /// dropped before an answer) or back up.
    pub fn set_reachable(&self, reachable: bool) {
        self.state
            .reachable
            .store(reachable, std::sync::atomic::Ordering::SeqCst);
        if !reachable {
            // Open watch streams break with the server.
            lock(&self.state.store).watches.clear();
        }
    }

    /// Ends every open watch and compacts the history up to now, as an
    /// etcd compaction after a watch's timeout does: a watch resumed from
    /// any earlier version gets `410 Gone` and must list again.
    pub fn expire_watches(&self) {
        let mut store = lock(&self.state.store);
        store.compacted = store.bump().parse().unwrap_or(u64::MAX);
        store.history.clear();
        store.watches.clear();
    }

    /// Marks a namespace deleted but not gone yet (`deletionTimestamp`,
    /// phase `Terminating`): the API server refuses new objects in it.
    pub fn terminate_namespace(&self, name: &str) {
        let mut store = lock(&self.state.store);
        let key = (NAMESPACES_PATH.to_owned(), name.to_owned());
        let Some(old) = store.objects.get(&key).cloned() else {
            return;
        };
        let mut new = old.clone();
        new["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
        new["status"] = json!({"phase": "Terminating"});
        new["metadata"]["resourceVersion"] = json!(store.bump());
        store.objects.insert(key, new.clone());
        store.terminating.insert(name.to_owned());
        store.changed(Kind::Namespace, None, Some(old), Some(new));
    }

    /// Finishes a namespace's deletion: its objects, then itself, go.
    pub fn finish_namespace_deletion(&self, name: &str) {
        let prefix = format!("{NAMESPACES_PATH}/{name}/");
        let keys: Vec<(String, String)> = lock(&self.state.store)
            .objects
            .keys()
            .filter(|(collection, _)| collection.starts_with(&prefix))
            .cloned()
            .collect();
        for (collection, object) in keys {
            self.remove(&collection, &object);
        }
        self.remove(NAMESPACES_PATH, name);
        lock(&self.state.store).terminating.remove(name);
    }

    /// Deletes an object without a request (not recorded), as another
    /// client would.
    pub fn remove(&self, collection: &str, name: &str) {
        let Some(route) = route(collection) else { return };
        let mut store = lock(&self.state.store);
        if let Some(old) = store.objects.remove(&(collection.to_owned(), name.to_owned())) {
            store.bump();
            store.changed(route.kind, route.namespace.as_deref(), Some(old), None);
        }
    }

    /// Watch streams open now: a client's watch counts from the moment it
    /// is served until its connection goes (a reconnecting watcher shows
    /// here once it is back).
    pub fn open_watches(&self) -> usize {
        lock(&self.state.store)
            .watches
            .iter()
            .filter(|watch| !watch.sender.is_closed())
            .count()
    }

    /// Requests refused while down (recorded with status 0).
    pub fn refused(&self) -> usize {
        self.requests()
            .iter()
            .filter(|request| request.status == 0)
            .count()
    }

    pub fn set_signer(&self, mode: SignerMode) {
        *lock(&self.state.signer) = mode;
    }

    /// Makes the signer wait until `approved` CSRs are approved, then sign
    /// them all: racing replicas then surely all read the secret before any
    /// of them can write it, whatever the machine's load.
    pub fn set_sign_barrier(&self, approved: usize) {
        *lock(&self.state.sign_barrier) = approved;
    }

    /// Puts an object in place without a request (not recorded), as if it
    /// had been created before the test.
    pub fn seed(&self, collection: &str, object: &impl Serialize) {
        let kind = route(collection).expect("a known collection").kind;
        let mut value = kind
            .normalize(serde_json::to_value(object).expect("serializable object"))
            .expect("a valid object");
        let name = value["metadata"]["name"]
            .as_str()
            .expect("seeded objects have names")
            .to_owned();
        let namespace = route(collection).and_then(|r| r.namespace);
        let mut store = lock(&self.state.store);
        let key = (collection.to_owned(), name);
        let old = store.objects.get(&key).cloned();
        stamp_new(&mut store, kind, &mut value, namespace.as_deref());
        if let Some(old) = &old {
            // An update keeps the object's identity.
            value["metadata"]["uid"] = old["metadata"]["uid"].clone();
        }
        store.objects.insert(key, value.clone());
        store.changed(kind, namespace.as_deref(), old, Some(value));
    }

    /// The stored object, typed.
    pub fn get<T: DeserializeOwned>(&self, collection: &str, name: &str) -> Option<T> {
        let store = lock(&self.state.store);
        store
            .objects
            .get(&(collection.to_owned(), name.to_owned()))
            .map(|value| serde_json::from_value(value.clone()).expect("stored objects are valid"))
    }

    /// Every stored object of a collection, typed.
    pub fn list<T: DeserializeOwned>(&self, collection: &str) -> Vec<T> {
        let store = lock(&self.state.store);
        store
            .objects
            .iter()
            .filter(|((stored, _), _)| stored == collection)
            .map(|(_, value)| serde_json::from_value(value.clone()).expect("stored objects are valid"))
            .collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|request| request.path.starts_with(prefix))
            .collect()
    }

    /// Successful writes (any non-GET answered 2xx) under `prefix`.
    pub fn writes_to(&self, prefix: &str) -> usize {
        self.requests_to(prefix)
            .iter()
            .filter(|request| request.is_write() && request.succeeded())
            .count()
    }

    /// Write attempts under `prefix`, whatever the answer.
    pub fn write_attempts_to(&self, prefix: &str) -> usize {
        self.requests_to(prefix)
            .iter()
            .filter(|request| request.is_write())
            .count()
    }

    /// Successful writes anywhere.
    pub fn writes(&self) -> usize {
        self.writes_to("/")
    }

    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = Query::parse(request.uri().query().unwrap_or_default());
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let listing = method == Method::GET && route(&path).is_some_and(|r| r.name.is_none());
    if listing && query.watch {
        lock(&state.requests).push(Recorded {
            method,
            path: format!("{path}?watch"),
            status: 200,
        });
        return watch(&state, &path, query);
    }
    // The record is taken under one lock with the change, so a test that
    // sees the change in the store also finds the request that made it.
    let mut requests = lock(&state.requests);
    let (status, answer) = if listing {
        list(&state, &path, &query)
    } else {
        dispatch(&state, &method, &path, &body)
    };
    requests.push(Recorded {
        method,
        path,
        status: status.as_u16(),
    });
    drop(requests);
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(answer.to_string()))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// Does the stored object at `collection` belong to a list of `route`?
fn in_collection(route: &Route, collection: &str) -> bool {
    if route.namespace.is_some() || route.kind != Kind::Secret {
        return collection == route.collection;
    }
    // Secrets of every namespace.
    self::route(collection).is_some_and(|stored| stored.kind == Kind::Secret && stored.name.is_none())
}

fn list(state: &Arc<State>, path: &str, query: &Query) -> Answer {
    let Some(route) = route(path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    };
    let store = lock(&state.store);
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|((collection, _), object)| in_collection(&route, collection) && query.selects(object))
        .map(|(_, object)| object.clone())
        .collect();
    (
        StatusCode::OK,
        json!({
            "apiVersion": route.kind.api_version(),
            "kind": format!("{}List", route.kind.kind()),
            "metadata": {"resourceVersion": store.next_resource_version.to_string()},
            "items": items,
        }),
    )
}

/// A watch: the changes after the asked version, then every new one, as
/// JSON lines; `410 Gone` (an `ERROR` event, as the API server sends it) for
/// a compacted version.
fn watch(state: &Arc<State>, path: &str, query: Query) -> Response<Body> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    if let Some(route) = route(path) {
        let mut store = lock(&state.store);
        let watch = Watch {
            kind: route.kind,
            namespace: route.namespace.clone(),
            query,
            sender,
        };
        let from: Option<u64> = watch
            .query
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok());
        match from {
            Some(from) if from < store.compacted => {
                let gone = status(
                    StatusCode::GONE,
                    "Expired",
                    &format!("too old resource version: {from} ({})", store.compacted),
                    None,
                )
                .1;
                send(&watch, &json!({"type": "ERROR", "object": gone}));
            }
            Some(from) => {
                let pending: Vec<Value> = store
                    .history
                    .iter()
                    .filter(|change| change.version > from)
                    .filter_map(|change| watch.event_for(change))
                    .collect();
                for event in &pending {
                    send(&watch, event);
                }
                store.watches.push(watch);
            }
            None => {
                // No version: the current state as ADDED, then changes.
                for ((collection, _), object) in &store.objects {
                    if in_collection(&route, collection) && watch.query.selects(object) {
                        send(&watch, &json!({"type": "ADDED", "object": object}));
                    }
                }
                store.watches.push(watch);
            }
        }
    }
    let frames = futures::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        Some((Ok::<_, std::io::Error>(Frame::data(line)), receiver))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn dispatch(state: &Arc<State>, method: &Method, path: &str, body: &[u8]) -> Answer {
    let Some(route) = route(path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    };
    match (method, route.name.as_deref(), route.subresource.as_deref()) {
        (&Method::GET, Some(name), None) => get(state, &route, name),
        (&Method::POST, None, None) => create(state, &route, body),
        (&Method::PUT, Some(name), None) => update(state, &route, name, body),
        (&Method::PUT, Some(name), Some("approval")) if route.kind == Kind::Csr => {
            approve(state, &route, name, body)
        }
        (&Method::DELETE, Some(name), None) => delete(state, &route, name, body),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource ({method} {path})"),
            None,
        ),
    }
}

fn get(state: &Arc<State>, route: &Route, name: &str) -> Answer {
    let store = lock(&state.store);
    match store.objects.get(&(route.collection.clone(), name.to_owned())) {
        Some(object) => (StatusCode::OK, object.clone()),
        None => not_found(route, name),
    }
}

fn create(state: &Arc<State>, route: &Route, body: &[u8]) -> Answer {
    let mut object = match decode(route.kind, body) {
        Ok(object) => object,
        Err(answer) => return answer,
    };
    if object["metadata"]["name"].as_str().is_none()
        && let Some(prefix) = object["metadata"]["generateName"].as_str()
    {
        let suffix = lock(&state.store).next_uid + 1;
        object["metadata"]["name"] = json!(format!("{prefix}{suffix:05}"));
    }
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value: name or generateName is required",
            None,
        );
    };
    if let (Some(path_ns), Some(body_ns)) = (&route.namespace, object["metadata"]["namespace"].as_str())
        && path_ns != body_ns
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
            None,
        );
    }
    if let Err(message) = validate(route.kind, &object) {
        return invalid(route, &name, &message);
    }
    let mut store = lock(&state.store);
    if let Some(namespace) = &route.namespace
        && store.terminating.contains(namespace)
    {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                route.kind.resource()
            ),
            Some((route.kind, &name)),
        );
    }
    let key = (route.collection.clone(), name.clone());
    if store.objects.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", route.kind.resource()),
            Some((route.kind, &name)),
        );
    }
    if route.kind == Kind::Csr {
        // The status of a new CSR is the API server's, not the client's.
        object["status"] = json!({});
    }
    stamp_new(&mut store, route.kind, &mut object, route.namespace.as_deref());
    store.objects.insert(key, object.clone());
    store.changed(route.kind, route.namespace.as_deref(), None, Some(object.clone()));
    (StatusCode::CREATED, object)
}

fn update(state: &Arc<State>, route: &Route, name: &str, body: &[u8]) -> Answer {
    let mut object = match decode(route.kind, body) {
        Ok(object) => object,
        Err(answer) => return answer,
    };
    if object["metadata"]["name"].as_str() != Some(name) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name of the object does not match the name on the URL",
            None,
        );
    }
    if let Err(message) = validate(route.kind, &object) {
        return invalid(route, name, &message);
    }
    let mut store = lock(&state.store);
    let key = (route.collection.clone(), name.to_owned());
    let Some(stored) = store.objects.get(&key).cloned() else {
        return not_found(route, name);
    };
    if let Some(conflict) = precondition(route, name, &object, &stored) {
        return conflict;
    }
    if route.kind == Kind::Secret && object.get("type") != stored.get("type") && object.get("type").is_some()
    {
        return invalid(route, name, "type: Invalid value: field is immutable");
    }
    if route.kind == Kind::Csr {
        object["status"] = stored["status"].clone();
    }
    let metadata = &mut object["metadata"];
    metadata["uid"] = stored["metadata"]["uid"].clone();
    metadata["creationTimestamp"] = stored["metadata"]["creationTimestamp"].clone();
    if let Some(namespace) = &route.namespace {
        metadata["namespace"] = json!(namespace);
    }
    if let Some(map) = metadata.as_object_mut() {
        map.remove("managedFields");
    }
    apply_defaults(route.kind, &mut object);
    object["metadata"]["resourceVersion"] = json!(store.bump());
    store.objects.insert(key, object.clone());
    store.changed(
        route.kind,
        route.namespace.as_deref(),
        Some(stored),
        Some(object.clone()),
    );
    (StatusCode::OK, object)
}

fn approve(state: &Arc<State>, route: &Route, name: &str, body: &[u8]) -> Answer {
    let object = match decode(route.kind, body) {
        Ok(object) => object,
        Err(answer) => return answer,
    };
    let conditions = object["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut types: Vec<&str> = conditions.iter().filter_map(|c| c["type"].as_str()).collect();
    let count = types.len();
    types.sort_unstable();
    types.dedup();
    if types.len() != count {
        return invalid(
            route,
            name,
            "status.conditions: Duplicate value: condition types must be unique",
        );
    }
    if types.contains(&"Approved") && types.contains(&"Denied") {
        return invalid(
            route,
            name,
            "status.conditions: Approved and Denied conditions are mutually exclusive",
        );
    }
    let (answer, to_sign) = {
        let mut store = lock(&state.store);
        let key = (route.collection.clone(), name.to_owned());
        let Some(mut stored) = store.objects.get(&key).cloned() else {
            return not_found(route, name);
        };
        if let Some(conflict) = precondition(route, name, &object, &stored) {
            return conflict;
        }
        stored["status"]["conditions"] = Value::Array(conditions);
        stored["metadata"]["resourceVersion"] = json!(store.bump());
        store.objects.insert(key, stored.clone());
        let approved: Vec<String> = store
            .objects
            .iter()
            .filter(|((collection, _), csr)| {
                *collection == route.collection && has_condition(csr, "Approved")
            })
            .map(|((_, name), _)| name.clone())
            .collect();
        let to_sign = if approved.len() >= *lock(&state.sign_barrier) {
            approved
        } else {
            Vec::new()
        };
        (stored, to_sign)
    };
    for name in to_sign {
        let state = state.clone();
        let collection = route.collection.clone();
        tokio::spawn(async move {
            tokio::time::sleep(state.sign_delay).await;
            sign(&state, &collection, &name);
        });
    }
    (StatusCode::OK, answer)
}

fn delete(state: &Arc<State>, route: &Route, name: &str, body: &[u8]) -> Answer {
    let mut store = lock(&state.store);
    let key = (route.collection.clone(), name.to_owned());
    let Some(stored) = store.objects.get(&key).cloned() else {
        return not_found(route, name);
    };
    // DeleteOptions' preconditions.
    let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let preconditions = &options["preconditions"];
    let uid_differs = preconditions["uid"]
        .as_str()
        .is_some_and(|uid| Some(uid) != stored["metadata"]["uid"].as_str());
    let version_differs = preconditions["resourceVersion"]
        .as_str()
        .is_some_and(|version| Some(version) != stored["metadata"]["resourceVersion"].as_str());
    if uid_differs || version_differs {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed",
                route.kind.resource()
            ),
            Some((route.kind, name)),
        );
    }
    store.objects.remove(&key);
    store.bump();
    store.changed(route.kind, route.namespace.as_deref(), Some(stored.clone()), None);
    (StatusCode::OK, stored)
}

/// The signer controller's work on an approved CSR.
fn sign(state: &State, collection: &str, name: &str) {
    let mode = *lock(&state.signer);
    let mut store = lock(&state.store);
    let key = (collection.to_owned(), name.to_owned());
    let Some(mut csr) = store.objects.get(&key).cloned() else {
        return;
    };
    // Signed or failed already (a barrier releases every approved CSR).
    if csr["status"]["certificate"].is_string() || has_condition(&csr, "Failed") {
        return;
    }
    match mode {
        SignerMode::Never => return,
        SignerMode::Fail => {
            let conditions = csr["status"]["conditions"].as_array_mut();
            let failed = json!({
                "type": "Failed",
                "status": "True",
                "reason": "SignerValidationFailure",
                "message": "the fake signer refuses this request",
            });
            match conditions {
                Some(list) => list.push(failed),
                None => csr["status"]["conditions"] = json!([failed]),
            }
        }
        SignerMode::Sign => {
            let request = csr["spec"]["request"].as_str().unwrap_or_default();
            let Ok(pem) = BASE64.decode(request) else { return };
            let Ok(pem) = String::from_utf8(pem) else { return };
            let rotated = lock(&state.rotated_ca).clone();
            let ca = rotated.as_deref().unwrap_or(&state.ca);
            let signed = match *lock(&state.cert_lifetime) {
                Some(lifetime) => ca.sign_csr_for(&pem, lifetime),
                None => ca.sign_csr(&pem, 365),
            };
            let Ok(cert) = signed else {
                return;
            };
            csr["status"]["certificate"] = json!(BASE64.encode(cert));
        }
    }
    csr["metadata"]["resourceVersion"] = json!(store.bump());
    store.objects.insert(key, csr);
}

fn record_refused(state: &State) {
    lock(&state.requests).push(Recorded {
        method: Method::GET,
        path: "(refused)".to_owned(),
        status: 0,
    });
}

fn decode(kind: Kind, body: &[u8]) -> Result<Value, Answer> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("invalid JSON: {err}"),
            None,
        )
    })?;
    if value["apiVersion"] != kind.api_version() || value["kind"] != kind.kind() {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("expected {} {}", kind.api_version(), kind.kind()),
            None,
        ));
    }
    kind.normalize(value).map_err(|err| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("cannot decode the {}: {err}", kind.kind()),
            None,
        )
    })
}

/// The validation the real API server would apply to what `init` sends.
fn validate(kind: Kind, object: &Value) -> Result<(), String> {
    match kind {
        Kind::Mwc => {
            for hook in object["webhooks"].as_array().into_iter().flatten() {
                if hook["admissionReviewVersions"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
                {
                    return Err("webhooks[].admissionReviewVersions: Required value".into());
                }
                if hook["sideEffects"].as_str().is_none() {
                    return Err("webhooks[].sideEffects: Required value".into());
                }
            }
            Ok(())
        }
        Kind::Csr => {
            let request = object["spec"]["request"].as_str().unwrap_or_default();
            let pem = BASE64
                .decode(request)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .unwrap_or_default();
            if !pem.contains("BEGIN CERTIFICATE REQUEST") {
                return Err("spec.request: Invalid value: PEM block type must be CERTIFICATE REQUEST".into());
            }
            if object["spec"]["signerName"].as_str().is_none_or(str::is_empty) {
                return Err("spec.signerName: Required value".into());
            }
            if object["spec"]["usages"].as_array().is_none_or(Vec::is_empty) {
                return Err("spec.usages: Required value".into());
            }
            Ok(())
        }
        Kind::Secret | Kind::ConfigMap | Kind::Namespace | Kind::Event => Ok(()),
    }
}

fn precondition(route: &Route, name: &str, sent: &Value, stored: &Value) -> Option<Answer> {
    let sent_version = sent["metadata"]["resourceVersion"].as_str().unwrap_or_default();
    if !sent_version.is_empty()
        && sent_version != stored["metadata"]["resourceVersion"].as_str().unwrap_or_default()
    {
        return Some(status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                route.kind.resource()
            ),
            Some((route.kind, name)),
        ));
    }
    None
}

fn stamp_new(store: &mut Store, kind: Kind, object: &mut Value, namespace: Option<&str>) {
    store.next_uid += 1;
    let uid = format!("00000000-0000-4000-8000-{:012}", store.next_uid);
    let version = store.bump();
    let metadata = &mut object["metadata"];
    metadata["uid"] = json!(uid);
    metadata["resourceVersion"] = json!(version);
    metadata["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    if let Some(map) = metadata.as_object_mut() {
        map.remove("managedFields");
    }
    apply_defaults(kind, object);
}

/// The defaults the API server fills in.
fn apply_defaults(kind: Kind, object: &mut Value) {
    fn default(map: &mut Value, key: &str, value: Value) {
        if let Some(map) = map.as_object_mut() {
            map.entry(key).or_insert(value);
        }
    }
    match kind {
        Kind::Secret => default(object, "type", json!("Opaque")),
        Kind::Mwc => {
            for hook in object["webhooks"].as_array_mut().into_iter().flatten() {
                default(hook, "failurePolicy", json!("Fail"));
                default(hook, "matchPolicy", json!("Equivalent"));
                default(hook, "namespaceSelector", json!({}));
                default(hook, "objectSelector", json!({}));
                default(hook, "reinvocationPolicy", json!("Never"));
                default(hook, "timeoutSeconds", json!(10));
                if hook["clientConfig"]["service"].is_object() {
                    default(&mut hook["clientConfig"]["service"], "port", json!(443));
                }
                for rule in hook["rules"].as_array_mut().into_iter().flatten() {
                    default(rule, "scope", json!("*"));
                }
            }
        }
        Kind::Namespace => {
            if object["status"]["phase"].is_null() {
                object["status"] = json!({"phase": "Active"});
            }
        }
        Kind::ConfigMap | Kind::Csr | Kind::Event => {}
    }
}

fn has_condition(csr: &Value, kind: &str) -> bool {
    csr["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|condition| condition["type"] == kind && condition["status"] == "True")
}

fn not_found(route: &Route, name: &str) -> Answer {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", route.kind.resource()),
        Some((route.kind, name)),
    )
}

fn invalid(route: &Route, name: &str, message: &str) -> Answer {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!(
            "{} {} \"{name}\" is invalid: {message}",
            route.kind.kind(),
            route.kind.resource()
        ),
        Some((route.kind, name)),
    )
}

/// A `metav1.Status` as the API server sends it.
fn status(code: StatusCode, reason: &str, message: &str, details: Option<(Kind, &str)>) -> Answer {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some((kind, name)) = details {
        let (resource, group) = kind.resource().split_once('.').unwrap_or((kind.resource(), ""));
        body["details"] = json!({"name": name, "group": group, "kind": resource});
    }
    (code, body)
}
