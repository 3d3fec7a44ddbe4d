//! Client connections at the edge, driven over raw TCP: a rejected request leaves a kept-alive
//! connection usable (or closes it cleanly, saying so), slow or silent clients and idle
//! connections are closed, one address cannot hold every connection, and shutdown does not wait
//! for a client that never finishes its request.

use std::time::{Duration, Instant};

use agora_testkit::{Platform, PlatformBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::Api;

/// One response read off a raw connection.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(p: &Platform) -> Raw {
        Raw { s: TcpStream::connect(p.gateway_addr).await.unwrap(), buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes).await
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply in 10 s"))??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one whole response (Content-Length or chunked body).
    async fn reply(&mut self) -> std::io::Result<Reply> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill().await? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a reply"));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
        let reply = Reply { status, headers };
        if let Some(len) = reply.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                if self.fill().await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            self.buf.drain(..len);
        } else if reply.header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                    if self.fill().await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    continue;
                };
                let size = usize::from_str_radix(String::from_utf8_lossy(&self.buf[..i]).trim(), 16).unwrap();
                while self.buf.len() < i + 2 + size + 2 {
                    if self.fill().await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                self.buf.drain(..i + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        }
        Ok(reply)
    }

    /// Waits for the server to close: true if it did within `limit`.
    async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut chunk = [0u8; 1024];
        while Instant::now() < deadline {
            match tokio::time::timeout(deadline - Instant::now(), self.s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
        false
    }
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: agora.test\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

const INSTANCE: &[u8] = b"GET /api/v1/instance HTTP/1.1\r\nHost: agora.test\r\n\r\n";

/// Sends `first`, reads its reply, then asks for the instance on the same connection. The
/// connection must either carry the second request or have said `Connection: close` and closed.
async fn second_request_after(p: &Platform, first: &[u8], want: u16) -> Reply {
    let mut c = Raw::connect(p).await;
    // Head and body in two writes, as HTTP clients send them: the answer may be ready before
    // the body has arrived.
    let split = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    c.send(&first[..split]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let _ = c.send(&first[split..]).await;
    let r = c.reply().await.unwrap();
    assert_eq!(r.status, want, "{r:?}");
    if r.closes() {
        assert!(c.closed_within(Duration::from_secs(5)).await, "said Connection: close but kept the socket");
        return r;
    }
    c.send(INSTANCE).await.unwrap_or_else(|e| panic!("after a {want}: the kept-alive connection broke: {e}"));
    let again = c.reply().await.unwrap_or_else(|e| panic!("after a {want}: the kept-alive connection broke: {e}"));
    assert_eq!(again.status, 200, "after a {want}");
    r
}

fn form(n: usize) -> Vec<u8> {
    format!("status={}", "a".repeat(n.saturating_sub(7))).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_leave_the_connection_usable() {
    let p = PlatformBuilder::embedded()
        .setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off")
        .setting("AGORA_GATEWAY_MAX_BODY_BYTES", "65536")
        .start()
        .await
        .unwrap();
    let api = Api::new(&p).await;
    let (name, token, _) = api.user().await;
    let bearer = format!("Bearer {token}");
    // A token without write:statuses, for the 403.
    let read_only: serde_json::Value =
        api.sign_in(&name, "long enough password", "read").send().await.unwrap().json().await.unwrap();
    let read_only = format!("Bearer {}", read_only["access_token"].as_str().unwrap());
    let body = form(100);
    let url_form = ("Content-Type", "application/x-www-form-urlencoded");
    let cases: Vec<(u16, Vec<u8>)> = vec![
        (401, request("POST", "/api/v1/statuses", &[url_form, ("Authorization", "Bearer nonsense")], &body)),
        (403, request("POST", "/api/v1/statuses", &[url_form, ("Authorization", &read_only)], &body)),
        (404, request("POST", "/api/v1/nope", &[url_form], &body)),
        (405, request("DELETE", "/api/v1/instance", &[url_form], &body)),
        (
            415,
            request("POST", "/api/v1/statuses", &[("Content-Type", "text/plain"), ("Authorization", &bearer)], &body),
        ),
        (422, request("POST", "/api/v1/statuses", &[url_form, ("Authorization", &bearer)], b"status=")),
    ];
    for (want, req) in &cases {
        let r = second_request_after(&p, req, *want).await;
        assert!(!r.closes(), "a {want} to a 100-byte body keeps the connection (it is drained)");
    }
    // Too large to drain: the connection may close, but says so first.
    let big = form(100 * 1024);
    second_request_after(&p, &request("POST", "/api/v1/statuses", &[url_form, ("Authorization", &bearer)], &big), 413)
        .await;
    p.stop().await.unwrap();

    // 429, from the limiter in front of everything.
    let limited = PlatformBuilder::embedded().setting("AGORA_GATEWAY_RATE_LIMIT_IP", "2/300").start().await.unwrap();
    let req = request("POST", "/api/v1/nope", &[url_form], &body);
    let mut c = Raw::connect(&limited).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        c.send(&req).await.unwrap();
        statuses.push(c.reply().await.unwrap().status);
    }
    assert_eq!(statuses, vec![404, 404, 429, 429], "four requests on one kept-alive connection");
    limited.stop().await.unwrap();
}

fn closed_count(reason: &str) -> f64 {
    agora_kit::metrics::render()
        .lines()
        .filter(|l| {
            l.starts_with("agora_gateway_connections_closed_total{") && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_idle_clients_are_closed() {
    let p = PlatformBuilder::embedded()
        .setting("AGORA_GATEWAY_HEADER_TIMEOUT_MS", "600")
        .setting("AGORA_GATEWAY_IDLE_TIMEOUT_MS", "800")
        .start()
        .await
        .unwrap();
    let before = (closed_count("header_timeout"), closed_count("idle_timeout"));

    // A head sent one byte at a time, 100 ms apart, never completes in time.
    let mut slow = Raw::connect(&p).await;
    let trickle = async {
        for b in INSTANCE {
            if slow.send(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let started = Instant::now();
    trickle.await;
    assert!(started.elapsed() < Duration::from_secs(5), "the slow client was cut off while sending");
    assert!(slow.closed_within(Duration::from_secs(5)).await);

    // Silent connections are closed too.
    let mut silent: Vec<Raw> = Vec::new();
    for _ in 0..20 {
        silent.push(Raw::connect(&p).await);
    }
    for c in &mut silent {
        assert!(c.closed_within(Duration::from_secs(5)).await, "a connection that never sent a byte stays open");
    }

    // A kept-alive connection that goes quiet after a request is closed after the idle timeout,
    // and a busy one is not.
    let mut idle = Raw::connect(&p).await;
    for _ in 0..4 {
        idle.send(INSTANCE).await.unwrap();
        assert_eq!(idle.reply().await.unwrap().status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(idle.closed_within(Duration::from_secs(5)).await, "an idle keep-alive connection stays open");

    assert!(closed_count("header_timeout") >= before.0 + 21.0, "header timeouts are counted");
    assert!(closed_count("idle_timeout") > before.1, "idle closes are counted");
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection() {
    let p =
        PlatformBuilder::embedded().setting("AGORA_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", "3").start().await.unwrap();
    let before = closed_count("per_address_limit");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::connect(&p).await;
        c.send(INSTANCE).await.unwrap();
        assert_eq!(c.reply().await.unwrap().status, 200);
        held.push(c);
    }
    let mut fourth = Raw::connect(&p).await;
    assert!(fourth.closed_within(Duration::from_secs(5)).await, "a fourth connection from one address is refused");
    for c in &mut held {
        c.send(INSTANCE).await.unwrap();
        assert_eq!(c.reply().await.unwrap().status, 200, "the three held connections still work");
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = Raw::connect(&p).await;
    again.send(INSTANCE).await.unwrap();
    assert_eq!(again.reply().await.unwrap().status, 200, "slots come back when connections close");
    assert!(closed_count("per_address_limit") > before);
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_half_sent_request() {
    let p = PlatformBuilder::embedded().setting("AGORA_GATEWAY_SHUTDOWN_GRACE_MS", "1000").start().await.unwrap();
    let api = Api::new(&p).await;
    let (_, token, _) = api.user().await;
    let mut c = Raw::connect(&p).await;
    // The head promises 100 bytes of body; 10 arrive, and then nothing.
    let head = format!(
        "POST /api/v1/statuses HTTP/1.1\r\nHost: agora.test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nstatus=abc"
    );
    c.send(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), p.stop()).await.expect("shutdown waited for the client").unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900), "the client got its grace period");
    assert!(c.closed_within(Duration::from_secs(2)).await);
}
