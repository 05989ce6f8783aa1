//! Abuse from inside the cluster (issue 13, section 5): any pod can reach
//! the Service, and with `failurePolicy: Fail` a webhook that is down stops
//! pod creation everywhere. Idle connections, slow bodies, memory, the
//! answers to refused bodies over HTTP/2, `HEAD` over HTTP/2, and the
//! accept queue.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::support::server::{H2, Protocol, RawTls, Setup, TestServer};
use crate::support::{eventually, pod_review, review_of_size};

/// The HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Far above the short bounds the tests set, far below "never".
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Whether the peer closes `stream` (a read returns 0 bytes or fails)
/// within `within`; what it sends before closing is read and ignored (an
/// HTTP/2 server's SETTINGS and GOAWAY, say).
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_elapsed) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn short_bounds() -> Setup {
    Setup {
        limits: imageswap::config::Limits {
            tls_handshake_timeout: Duration::from_millis(300),
            first_request_timeout: Duration::from_millis(300),
            ..Setup::default().limits
        },
        ..Setup::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_a_request_are_closed() {
    let server = TestServer::start_with(short_bounds()).await;

    // TCP only: no TLS handshake.
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    assert!(
        closed_within(&mut tcp, CLOSE_WITHIN).await,
        "a silent TCP connection"
    );

    // TLS, then nothing, whatever ALPN chose.
    for alpn in [&[b"h2".as_slice()][..], &[b"http/1.1"], &[]] {
        let mut raw = RawTls::connect_alpn(server.addr, &server.ca, alpn).await;
        assert!(
            closed_within(&mut raw.stream, CLOSE_WITHIN).await,
            "a silent TLS connection with ALPN {alpn:?}"
        );
    }

    // HTTP/2: the preface (and SETTINGS) but never a stream.
    let mut raw = RawTls::connect_alpn(server.addr, &server.ca, &[b"h2"]).await;
    raw.write(PREFACE).await;
    raw.write(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
    assert!(
        closed_within(&mut raw.stream, CLOSE_WITHIN).await,
        "an HTTP/2 connection without a stream"
    );

    // HTTP/1.1: half a request head.
    let mut raw = RawTls::connect(&server).await;
    raw.write(b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\n").await;
    assert!(
        closed_within(&mut raw.stream, CLOSE_WITHIN).await,
        "an HTTP/1.1 connection with half a head"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sent_a_request_in_time_stays_open() {
    let server = TestServer::start_with(short_bounds()).await;
    let h2 = H2::connect(&server).await;
    let first = h2
        .send(get(&server.url("/healthz")))
        .await
        .expect("first request");
    assert_eq!(first.status, StatusCode::OK);
    // Past the first-request bound (what is tested here is that time
    // passing does not close a connection in use).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = h2
        .send(get(&server.url("/healthz")))
        .await
        .expect("same connection");
    assert_eq!(second.status, StatusCode::OK);
}

fn get(url: &str) -> Request<crate::support::server::H2Body> {
    Request::get(url).body(Full::default().boxed()).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_do_not_shed_other_requests() {
    const SLOW: usize = 4;
    let server = TestServer::start_with(Setup {
        limits: imageswap::config::Limits {
            max_concurrency: SLOW,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let h2 = H2::connect(&server).await;
    let body = pod_review("slow", &["nginx:1.25"]);
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let (sender, answer) = h2.start_post(&server.url("/"), body.len());
        sender
            .send(Bytes::copy_from_slice(&body[..body.len() / 2]))
            .await
            .expect("half a body");
        slow.push((sender, answer));
    }
    let line = format!("imageswap_inflight_requests {SLOW}");
    assert!(
        eventually(Duration::from_secs(5), async || server
            .metrics_text()
            .contains(&line))
        .await,
        "never saw {line}"
    );

    // As many normal requests as the concurrency limit, on HTTP/2 and
    // HTTP/1.1: all answered while the slow bodies dribble.
    for protocol in [Protocol::Http2, Protocol::Http1] {
        let client = server.client(protocol);
        for i in 0..SLOW {
            let answer = client
                .post(&server.url("/"), pod_review(&format!("normal-{i}"), &["nginx"]))
                .await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{protocol:?}: {}",
                String::from_utf8_lossy(&answer.body)
            );
        }
    }

    // The slow ones complete too.
    for (sender, answer) in slow {
        sender
            .send(Bytes::copy_from_slice(&body[body.len() / 2..]))
            .await
            .expect("rest of the body");
        drop(sender);
        let answer = answer.await.expect("task").expect("answer");
        assert_eq!(answer.status, StatusCode::OK);
    }
}

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_memory_budget_get_a_fast_503() {
    // Room for three bodies of 2 MiB in the share of bodies over 64 KiB (a
    // third of the budget).
    let server = TestServer::start_with(Setup {
        limits: imageswap::config::Limits {
            memory_budget_bytes: 18 * MIB,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let body = review_of_size("held", 2 * MIB);
    let h2 = H2::connect(&server).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (sender, answer) = h2.start_post(&server.url("/"), body.len());
        for chunk in body[..body.len() - 1024].chunks(64 * 1024) {
            sender.send(Bytes::copy_from_slice(chunk)).await.expect("body");
        }
        held.push((sender, answer));
    }
    // Once the held bodies are in, one more is refused, fast, without
    // waiting for memory to free up.
    let client = server.client(Protocol::Http2);
    let mut refused = None;
    let over_budget = eventually(Duration::from_secs(10), async || {
        let answer = client
            .post(&server.url("/"), review_of_size("extra", 2 * MIB))
            .await;
        let shed = answer.status == StatusCode::SERVICE_UNAVAILABLE;
        refused = Some(answer);
        shed
    })
    .await;
    let refused = refused.expect("an answer");
    assert!(over_budget, "no 503 past the budget: {:?}", refused.status);
    assert!(
        String::from_utf8_lossy(&refused.body).contains("memory"),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    // Small reviews still fit.
    let small = client
        .post(&server.url("/"), pod_review("small", &["nginx"]))
        .await;
    assert_eq!(small.status, StatusCode::OK);

    // The held ones are answered, and give their memory back.
    for (sender, answer) in held {
        sender
            .send(Bytes::copy_from_slice(&body[body.len() - 1024..]))
            .await
            .expect("rest");
        drop(sender);
        assert_eq!(
            answer.await.expect("task").expect("answer").status,
            StatusCode::OK
        );
    }
    let answer = client
        .post(&server.url("/"), review_of_size("after", 2 * MIB))
        .await;
    assert_eq!(answer.status, StatusCode::OK);

    // A burst of near-limit bodies: each is answered 200 or a fast 503,
    // and the budget lets several through.
    let url = server.url("/");
    let burst = (0..24).map(|i| {
        let client = server.client(Protocol::Http2);
        let url = url.clone();
        tokio::spawn(async move {
            client
                .post(&url, review_of_size(&format!("burst-{i}"), 3 * MIB - 4096))
                .await
                .status
        })
    });
    let mut statuses = Vec::new();
    for task in burst.collect::<Vec<_>>() {
        statuses.push(task.await.expect("task"));
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let shed = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(ok + shed, statuses.len(), "{statuses:?}");
    assert!(ok >= 1, "{statuses:?}");
}

/// Issue 19: big bodies holding all the memory they may must not shed the
/// reviews real pods make (a few KiB): those have their own share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_holding_their_budget_never_shed_a_pod_review() {
    const HELD: usize = 4;
    // Four bodies of 2 MiB would fill the whole budget.
    let server = TestServer::start_with(Setup {
        limits: imageswap::config::Limits {
            memory_budget_bytes: HELD * 2 * MIB,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let body = review_of_size("held", 2 * MIB);
    let h2 = H2::connect(&server).await;
    let mut held = Vec::new();
    for _ in 0..HELD {
        let (sender, answer) = h2.start_post(&server.url("/"), body.len());
        for chunk in body[..body.len() - 1024].chunks(64 * 1024) {
            sender.send(Bytes::copy_from_slice(chunk)).await.expect("body");
        }
        held.push((sender, answer));
    }
    // The big bodies' share is used up once one more is refused…
    let client = server.client(Protocol::Http2);
    let full = eventually(Duration::from_secs(10), async || {
        let extra = client
            .post(&server.url("/"), review_of_size("extra", 2 * MIB))
            .await;
        extra.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(full, "the big bodies' share never filled up");
    // … and Pod reviews of 4.5 KB, many at once, are all answered.
    let url = server.url("/");
    let pods: Vec<_> = (0..32)
        .map(|i| {
            let (client, url) = (server.client(Protocol::Http2), url.clone());
            tokio::spawn(async move {
                let answer = client.post(&url, review_of_size(&format!("pod-{i}"), 4608)).await;
                (answer.status, String::from_utf8_lossy(&answer.body).into_owned())
            })
        })
        .collect();
    for pod in pods {
        let (status, body) = pod.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The held bodies end, each answered (200, or the 503 of a full share).
    for (sender, answer) in held {
        let _ = sender
            .send(Bytes::copy_from_slice(&body[body.len() - 1024..]))
            .await;
        drop(sender);
        let status = answer.await.expect("task").expect("answer").status;
        assert!(
            [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE].contains(&status),
            "{status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_read_the_whole_413_and_not_ready_answers() {
    let server = TestServer::start_with(Setup {
        limits: imageswap::config::Limits {
            max_body_bytes: 64 * 1024,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    // Larger than the limit, and than HTTP/2's default windows, so the
    // client is still sending when the answer is decided.
    let body = review_of_size("big", 4 * MIB);
    for _ in 0..3 {
        let h2 = H2::connect(&server).await;
        let request = Request::post(server.url("/"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())).boxed())
            .expect("request");
        let answer = h2
            .send(request)
            .await
            .expect("the 413 is read without a stream error");
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            answer.json()["error"]
                .as_str()
                .expect("error")
                .contains("larger than")
        );
    }

    // curl over HTTP/2 (the client of the issue) reads it and exits 0.
    let answer = curl_post_h2(&server, &body).await;
    assert_eq!(answer.0, 413, "{answer:?}");
    assert!(answer.1.contains("larger than"), "{answer:?}");

    // Not ready: the maps file is not UTF-8.
    let server = TestServer::start_with(Setup {
        maps: b"\xff\xff".to_vec(),
        ..Setup::default()
    })
    .await;
    let body = review_of_size("unready", 2 * MIB);
    let h2 = H2::connect(&server).await;
    let request = Request::post(server.url("/"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("request");
    let answer = h2
        .send(request)
        .await
        .expect("the 503 is read without a stream error");
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .expect("error")
            .contains("not ready")
    );
    let answer = curl_post_h2(&server, &review_of_size("unready", 2 * MIB)).await;
    assert_eq!(answer.0, 503, "{answer:?}");
    assert!(answer.1.contains("not ready"), "{answer:?}");
}

/// `curl --http2` posting `body`: the status and the body it read. Fails
/// when curl does (a reset stream is curl's exit 92, "Stream error").
async fn curl_post_h2(server: &TestServer, body: &[u8]) -> (u16, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let data = dir.path().join("body.json");
    std::fs::write(&ca, &server.ca.pem).expect("ca");
    std::fs::write(&data, body).expect("body");
    let url = server.url("/");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["--http2", "-sS", "--cacert"])
            .arg(&ca)
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(format!("@{}", data.display()))
            .args(["-w", "\n%{http_code}", &url])
            .output()
            .expect("curl runs (scripts/test needs it installed)")
    })
    .await
    .expect("task");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "curl: {:?} {}{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let (text, status) = stdout.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), text.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_over_http2_has_headers_only() {
    let server = TestServer::start().await;
    let h2 = H2::connect(&server).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let request = Request::builder()
            .method(Method::HEAD)
            .uri(server.url(path))
            .body(Full::default().boxed())
            .expect("request");
        let answer = h2
            .send(request)
            .await
            .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(answer.body.is_empty(), "{path}: {:?}", answer.body);
    }
    // And over HTTP/1.1, the connection stays usable after a HEAD.
    let mut raw = RawTls::connect(&server).await;
    raw.write(
        b"HEAD /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
    )
    .await;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"health\":\"ok\"") {
        let n = tokio::time::timeout(CLOSE_WITHIN, raw.stream.read(&mut chunk))
            .await
            .expect("answers in time")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(text.matches("\"health\"").count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connects_fits_in_the_accept_queue() {
    // Bound but not accepting: every connect must complete in the
    // kernel's queue alone (a full queue drops the SYN; the client
    // retries after a second).
    const BURST: usize = 1000;
    let bound = TestServer::bind(Setup::default()).await;
    let addr = bound.server.local_addr();
    let connects = (0..BURST).map(|_| {
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(900), tokio::net::TcpStream::connect(addr)).await
        })
    });
    let mut held = Vec::new();
    let mut late = 0;
    for task in connects.collect::<Vec<_>>() {
        match task.await.expect("task") {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => late += 1,
        }
    }
    assert_eq!(late, 0, "{late} of {BURST} connects waited for the accept queue");
    for mut stream in held {
        let _ = stream.shutdown().await;
    }
}
