//! A real registry for the verification tests: Debian's `docker-registry`
//! (CNCF distribution 2.8) on 127.0.0.1 with a random port, plain, TLS
//! (the test CA), htpasswd (basic) or token auth (a test token issuer
//! served here, whose JWTs the registry itself verifies). Several instances
//! share one storage directory, so images are pushed through an open one
//! (the registry's own HTTP API: blob upload and manifest PUT) and looked
//! up through the one under test.
//!
//! Requests are counted from the registry's access log (stdout, written
//! before the response leaves), settled with a sentinel request; and by
//! [`Front`], a small HTTP front that forwards, answers a fixed status, or
//! hangs, for the failure cases.
//!
//! Nothing is installed here: `scripts/install-docker-registry` (run by
//! `scripts/test`) does that.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use base64::Engine as _;

use super::ca::TestCa;

const STARTUP_WITHIN: Duration = Duration::from_secs(20);
const LOG_WITHIN: Duration = Duration::from_secs(20);

/// The registry binary, or a failure that says how to install it.
pub fn binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("docker-registry"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/bin/docker-registry")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "docker-registry (Debian's CNCF distribution registry) is not installed: \
                 run scripts/install-docker-registry (scripts/test runs it first)"
            )
        })
}

/// How an instance authenticates.
pub enum Auth<'a> {
    None,
    /// `auth: htpasswd` with one user.
    Basic {
        user: &'a str,
        password: &'a str,
    },
    /// `auth: token` trusting `issuer`'s signing certificate.
    Token(&'a TokenServer),
}

/// Lines read from a stream, with a condition variable to wait on.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    added: Condvar,
}

impl Lines {
    fn reader(self: &Arc<Self>, stream: impl Read + Send + 'static) {
        let lines = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                lines.lines.lock().unwrap().push(line);
                lines.added.notify_all();
            }
        });
    }

    fn wait_for(&self, what: impl Fn(&str) -> bool) -> Option<String> {
        let mut lines = self.lines.lock().unwrap();
        let deadline = std::time::Instant::now() + LOG_WITHIN;
        loop {
            if let Some(line) = lines.iter().find(|l| what(l)) {
                return Some(line.clone());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            lines = self.added.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    tls: bool,
    access: Arc<Lines>,
    stderr: Arc<Lines>,
    sentinels: AtomicUsize,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (closed again for the registry to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// An instance on `storage`, TLS with a leaf of `ca` when given.
    pub fn start(storage: &Path, ca: Option<&TestCa>, auth: Auth<'_>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some(ca) = ca {
            let pair = ca.issue(&["127.0.0.1".to_owned(), "localhost".to_owned()], -1, 30);
            let cert = dir.path().join("tls.crt");
            let key = dir.path().join("tls.key");
            std::fs::write(&cert, &pair.cert_pem).unwrap();
            std::fs::write(&key, &pair.key_pem).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        match auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                let htpasswd = dir.path().join("htpasswd");
                let out = Command::new("htpasswd")
                    .args(["-nbB", user, password])
                    .output()
                    .expect("htpasswd (apache2-utils): run scripts/install-docker-registry");
                assert!(
                    out.status.success(),
                    "htpasswd: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::fs::write(&htpasswd, &out.stdout).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: imageswap-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            Auth::Token(issuer) => {
                let bundle = dir.path().join("token-signer.pem");
                std::fs::write(&bundle, &issuer.signer_pem).unwrap();
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    issuer.addr,
                    TokenServer::SERVICE,
                    TokenServer::ISSUER,
                    bundle.display()
                ));
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(binary())
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry");
        let access = Arc::new(Lines::default());
        let stderr = Arc::new(Lines::default());
        access.reader(child.stdout.take().unwrap());
        stderr.reader(child.stderr.take().unwrap());
        let registry = Registry {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: ca.is_some(),
            access,
            stderr,
            sentinels: AtomicUsize::new(0),
            _dir: dir,
        };
        let listening = format!("listening on 127.0.0.1:{port}");
        if registry.stderr.wait_for(|l| l.contains(&listening)).is_none() {
            panic!(
                "docker-registry did not start:\n{}",
                registry.stderr.lines.lock().unwrap().join("\n")
            );
        }
        let _ = STARTUP_WITHIN;
        registry
    }

    /// `host:port` as an image reference names it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Requests whose access-log line contains `needle` (e.g.
    /// `"HEAD /v2/a/manifests/1 "`), once every earlier request is logged:
    /// a sentinel request is sent and waited for (plain instances only).
    pub fn requests(&self, needle: &str) -> usize {
        assert!(!self.tls, "count requests on a plain instance");
        let n = self.sentinels.fetch_add(1, Ordering::Relaxed);
        let sentinel = format!("/v2/imageswap-sentinel/manifests/s{n}");
        let _ = http(self.addr, "GET", &sentinel, &[], b"");
        self.access
            .wait_for(|l| l.contains(&format!("{sentinel} ")))
            .expect("the sentinel request is logged");
        self.access
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Pushes a one-layer OCI image (through this instance: a plain one
    /// without auth); returns its manifest digest.
    pub fn push_image(&self, repository: &str, tag: &str) -> String {
        self.push_image_for(repository, tag, "amd64")
    }

    /// [`Registry::push_image`] whose config says `linux/<arch>`.
    pub fn push_image_for(&self, repository: &str, tag: &str, arch: &str) -> String {
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"tag":"{tag}"}}"#
        );
        let layer = format!("layer of {repository}:{tag}");
        let config_digest = self.push_blob(repository, config.as_bytes());
        let layer_digest = self.push_blob(repository, layer.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        self.put_manifest(
            repository,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.as_bytes(),
        )
    }

    /// Pushes an OCI index of two platform images; returns its digest.
    pub fn push_index(&self, repository: &str, tag: &str) -> String {
        self.push_index_of(repository, tag, &["amd64", "arm64"])
    }

    /// An OCI index of `linux/<arch>` images, one per `archs`; its digest.
    pub fn push_index_of(&self, repository: &str, tag: &str, archs: &[&str]) -> String {
        let mut entries = Vec::new();
        for arch in archs {
            let child_tag = format!("{tag}-{arch}");
            let digest = self.push_image_for(repository, &child_tag, arch);
            let size = self.manifest_size(repository, &digest);
            entries.push(format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
            ));
        }
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            entries.join(",")
        );
        self.put_manifest(
            repository,
            tag,
            "application/vnd.oci.image.index.v1+json",
            index.as_bytes(),
        )
    }

    /// Tags the index `digest` of `repository` as `tag` too (one GET of
    /// it, one PUT).
    pub fn put_tag(&self, repository: &str, tag: &str, digest: &str) {
        let media_type = "application/vnd.oci.image.index.v1+json";
        let response = http(
            self.addr,
            "GET",
            &format!("/v2/{repository}/manifests/{digest}"),
            &[("accept", media_type)],
            b"",
        );
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            self.put_manifest(repository, tag, media_type, &response.body),
            digest
        );
    }

    fn manifest_size(&self, repository: &str, digest: &str) -> usize {
        let response = http(
            self.addr,
            "GET",
            &format!("/v2/{repository}/manifests/{digest}"),
            &[("accept", "application/vnd.oci.image.manifest.v1+json")],
            b"",
        );
        assert_eq!(response.status, 200, "{}", response.text());
        response.body.len()
    }

    fn push_blob(&self, repository: &str, blob: &[u8]) -> String {
        let digest = sha256(blob);
        let started = http(
            self.addr,
            "POST",
            &format!("/v2/{repository}/blobs/uploads/"),
            &[],
            b"",
        );
        assert_eq!(started.status, 202, "start upload: {}", started.text());
        let location = started.header("location").expect("upload location");
        let path = location
            .split_once("://")
            .map_or(location.as_str(), |(_, rest)| {
                rest.find('/').map_or(rest, |i| &rest[i..])
            })
            .to_owned();
        let separator = if path.contains('?') { '&' } else { '?' };
        let done = http(
            self.addr,
            "PUT",
            &format!("{path}{separator}digest={digest}"),
            &[("content-type", "application/octet-stream")],
            blob,
        );
        assert_eq!(done.status, 201, "finish upload: {}", done.text());
        digest
    }

    fn put_manifest(&self, repository: &str, tag: &str, media_type: &str, body: &[u8]) -> String {
        let response = http(
            self.addr,
            "PUT",
            &format!("/v2/{repository}/manifests/{tag}"),
            &[("content-type", media_type)],
            body,
        );
        assert_eq!(
            response.status,
            201,
            "put manifest {repository}:{tag}: {}",
            response.text()
        );
        sha256(body)
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A plain HTTP/1.1 response.
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    pub fn text(&self) -> String {
        format!("{}\n{}", self.head, String::from_utf8_lossy(&self.body))
    }
}

/// One request over plain HTTP/1.1 (`connection: close`).
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Response {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// Reads one request head (and no body: the fronts and the token issuer
/// only see GETs and HEADs... and the token POST, whose body is read by
/// its content-length).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<String>, Vec<u8>)> {
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let length = headers
        .iter()
        .find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((first.trim_end().to_owned(), headers, body))
}

/// What a [`Front`] does with each request.
pub const FORWARD: u16 = 0;
pub const HANG: u16 = 1;
/// Answers 405 to HEAD (as some registries do) and forwards the rest.
pub const NO_HEAD: u16 = 2;
/// Holds every request until [`Front::release`], then forwards it.
pub const GATE: u16 = 3;

/// What a front has seen.
#[derive(Default)]
struct Counts {
    requests: usize,
    /// Requests held at the gate now, and the most at once.
    held: usize,
    max_held: usize,
}

/// An HTTP front on 127.0.0.1: forwards to an upstream (a plain registry),
/// or answers a fixed status, or accepts and never answers; counts every
/// request it receives before acting on it.
pub struct Front {
    pub addr: SocketAddr,
    mode: Arc<AtomicU16>,
    seen: Arc<(Mutex<Counts>, Condvar)>,
}

impl Front {
    pub fn start(upstream: Option<SocketAddr>, mode: u16) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU16::new(mode));
        let seen = Arc::new((Mutex::new(Counts::default()), Condvar::new()));
        let (m, s) = (mode.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (mode, seen) = (m.clone(), s.clone());
                std::thread::spawn(move || serve_front(stream, upstream, &mode, &seen));
            }
        });
        Front { addr, mode, seen }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// [`FORWARD`], [`HANG`] or a status to answer.
    pub fn set(&self, mode: u16) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.seen.0.lock().unwrap().requests
    }

    /// Opens the gate: held requests (and later ones) are forwarded.
    pub fn release(&self) {
        let _counts = self.seen.0.lock().unwrap();
        self.mode.store(FORWARD, Ordering::SeqCst);
        self.seen.1.notify_all();
    }

    /// The most requests held at the gate at once.
    pub fn max_held(&self) -> usize {
        self.seen.0.lock().unwrap().max_held
    }

    /// Waits until the front has received `n` requests in all.
    pub fn wait_requests(&self, n: usize) {
        let (count, cond) = &*self.seen;
        let guard = count.lock().unwrap();
        let (guard, timeout) = cond
            .wait_timeout_while(guard, LOG_WITHIN, |c| c.requests < n)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "the front saw {} requests, not {n}",
            guard.requests
        );
    }
}

fn serve_front(
    stream: TcpStream,
    upstream: Option<SocketAddr>,
    mode: &AtomicU16,
    seen: &(Mutex<Counts>, Condvar),
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some((first, headers, _)) = read_request(&mut reader) {
        {
            let mut counts = seen.0.lock().unwrap();
            counts.requests += 1;
            seen.1.notify_all();
            if mode.load(Ordering::SeqCst) == GATE {
                counts.held += 1;
                counts.max_held = counts.max_held.max(counts.held);
                let mut counts = seen
                    .1
                    .wait_while(counts, |_| mode.load(Ordering::SeqCst) == GATE)
                    .unwrap();
                counts.held -= 1;
            }
        }
        match mode.load(Ordering::SeqCst) {
            HANG => loop {
                std::thread::park();
            },
            NO_HEAD if first.starts_with("HEAD ") => {
                let answer = "HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n";
                if writer.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
            FORWARD | NO_HEAD => {
                let mut parts = first.split(' ');
                let (method, path) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"));
                let forwarded: Vec<(&str, &str)> = headers
                    .iter()
                    .filter_map(|h| h.split_once(':'))
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .filter(|(k, _)| {
                        !["host", "connection", "content-length"]
                            .iter()
                            .any(|n| k.eq_ignore_ascii_case(n))
                    })
                    .collect();
                let response = http(
                    upstream.expect("an upstream to forward to"),
                    method,
                    path,
                    &forwarded,
                    b"",
                );
                let mut head = response.head.clone();
                if method == "HEAD" || response.header("content-length").is_some() {
                    head.push_str("\r\n\r\n");
                } else {
                    head.push_str(&format!("\r\ncontent-length: {}\r\n\r\n", response.body.len()));
                }
                if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&response.body).is_err() {
                    return;
                }
            }
            status => {
                let answer = format!("HTTP/1.1 {status} Test\r\ncontent-length: 0\r\n\r\n");
                if writer.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

/// A token issuer for `auth: token`: answers `GET /token?scope=…&service=…`
/// for one user (Basic) with an ES256 JWT whose `x5c` header carries its
/// signing certificate, which the registry trusts as its `rootcertbundle`.
/// Grants exactly the scope asked for (pull and push on that repository).
pub struct TokenServer {
    pub addr: SocketAddr,
    pub signer_pem: String,
    requests: Arc<AtomicUsize>,
}

impl TokenServer {
    pub const SERVICE: &'static str = "imageswap-test-registry";
    pub const ISSUER: &'static str = "imageswap-test-issuer";
    /// The identity token (OAuth2 refresh token) it accepts.
    pub const REFRESH_TOKEN: &'static str = "imageswap-refresh";

    pub fn start(user: &str, password: &str) -> TokenServer {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "imageswap test token signer");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        let cert = params.self_signed(&key).unwrap();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let signer = Arc::new(signer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let Some((first, headers, body)) = read_request(&mut reader) else {
                    continue;
                };
                // GET with Basic, or Docker's OAuth2 POST of an identity token.
                let post = first.starts_with("POST ");
                let form = String::from_utf8_lossy(&body).into_owned();
                let field = |name: &str| {
                    form.split('&')
                        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                        .map(|v| {
                            percent_encoding::percent_decode_str(v)
                                .decode_utf8_lossy()
                                .into_owned()
                        })
                };
                let authorized = if post {
                    field("refresh_token").as_deref() == Some(TokenServer::REFRESH_TOKEN)
                        && field("grant_type").as_deref() == Some("refresh_token")
                } else {
                    headers.iter().any(|h| {
                        h.split_once(':').is_some_and(|(k, v)| {
                            k.eq_ignore_ascii_case("authorization") && v.trim() == expected
                        })
                    })
                };
                let query = if post {
                    form.as_str()
                } else {
                    first
                        .split(' ')
                        .nth(1)
                        .and_then(|p| p.split_once('?'))
                        .map_or("", |(_, q)| q)
                };
                let scope = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("scope="))
                    .map(|s| {
                        percent_encoding::percent_decode_str(s)
                            .decode_utf8_lossy()
                            .into_owned()
                    });
                let answer = match (authorized, scope) {
                    (true, Some(scope)) => {
                        let token = jwt(&signer, &x5c, &scope);
                        // The OAuth2 answer names it access_token.
                        let body = if first.starts_with("POST ") {
                            format!(r#"{{"access_token":"{token}","expires_in":300}}"#)
                        } else {
                            format!(r#"{{"token":"{token}","expires_in":300}}"#)
                        };
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    _ => "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_owned(),
                };
                let _ = writer.write_all(answer.as_bytes());
            }
        });
        TokenServer {
            addr,
            signer_pem: cert.pem(),
            requests,
        }
    }

    /// Token requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A JWT for `scope` (`repository:NAME:ACTIONS`), as distribution's token
/// auth expects it.
fn jwt(signer: &ring::signature::EcdsaKeyPair, x5c: &str, scope: &str) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut parts = scope.splitn(3, ':');
    let (kind, name, actions) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let actions: Vec<String> = actions.split(',').map(|a| format!("\"{a}\"")).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = format!(r#"{{"typ":"JWT","alg":"ES256","x5c":["{x5c}"]}}"#);
    let claims = format!(
        r#"{{"iss":"{}","sub":"tester","aud":"{}","exp":{},"nbf":{},"iat":{now},"jti":"{now}-{name}","access":[{{"type":"{kind}","name":"{name}","actions":[{}]}}]}}"#,
        TokenServer::ISSUER,
        TokenServer::SERVICE,
        now + 300,
        now - 10,
        actions.join(",")
    );
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let signature = signer
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    format!("{signing_input}.{}", b64(signature.as_ref()))
}

/// One request a [`Scripted`] registry received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    /// The `Authorization` header, when there was one.
    pub authorization: Option<String>,
}

/// What a [`Scripted`] registry answers to one request.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Held this long before answering (a slow but healthy registry).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.to_owned();
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A registry (or token service) that answers what a test's script says,
/// for the behaviours the real registry cannot be made to show: a status
/// per repository (403, 429 with `Retry-After`, 401 after a token), a slow
/// but healthy answer, a hostile token response, a realm elsewhere. It
/// records every request and counts accepted connections (a connection
/// that sends nothing is counted too). Plain HTTP/1.1 with keep-alive, a
/// thread per connection, on 127.0.0.1.
pub struct Scripted {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Scripted {
    pub fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (s, c) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                c.fetch_add(1, Ordering::SeqCst);
                let (seen, script) = (s.clone(), script.clone());
                std::thread::spawn(move || serve_scripted(stream, &*script, &seen));
            }
        });
        Scripted {
            addr,
            seen,
            connections,
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests so far whose `METHOD path` starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| format!("{} {}", s.method, s.path).starts_with(prefix))
            .count()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve_scripted(stream: TcpStream, script: &Script, seen: &Mutex<Vec<Seen>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some((first, headers, _)) = read_request(&mut reader) {
        let mut parts = first.split(' ');
        let request = Seen {
            method: parts.next().unwrap_or("").to_owned(),
            path: parts.next().unwrap_or("").to_owned(),
            authorization: headers.iter().find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.eq_ignore_ascii_case("authorization")
                    .then(|| v.trim().to_owned())
            }),
        };
        seen.lock().unwrap().push(request.clone());
        let reply = script(&request);
        if !reply.delay.is_zero() {
            std::thread::sleep(reply.delay);
        }
        let mut head = format!("HTTP/1.1 {} Scripted\r\n", reply.status);
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", reply.body.len()));
        let body = if request.method == "HEAD" {
            ""
        } else {
            reply.body.as_str()
        };
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err() {
            return;
        }
    }
}
