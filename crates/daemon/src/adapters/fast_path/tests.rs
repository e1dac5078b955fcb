//! The fast path against what a VCS and a client of another kind send: which heads it takes,
//! the answers it writes, the hand-over, its deadlines and the shutdown.

#![allow(clippy::unwrap_used)]

use super::*;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::io::DuplexStream;

const AUTHORIZATION: &str = "Basic dmNzOnBhc3N3b3Jk";
const TIMEOUT: Duration = Duration::from_millis(1_000);

fn post(body: &str, extra_headers: &str) -> String {
    format!(
        "POST /baton/policy HTTP/1.1\r\nhost: baton\r\nauthorization: {AUTHORIZATION}\r\n\
         content-type: application/x-www-form-urlencoded\r\n{extra_headers}\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn policy_post(request: &str) -> PolicyPost {
    match parse(request.as_bytes()) {
        Parsed::PolicyPost(post) => post,
        other => panic!("{other:?} for {request:?}"),
    }
}

// Goal: a VCS's form POST is answered here, headers in any case, its `Authorization` kept;
// a head still arriving waits; anything this module does not fully understand, including
// every framing a request could be smuggled by, is the server's.
#[test]
fn only_a_plainly_framed_policy_post_is_taken() {
    let request = post("POLICY_TYPE=SEARCH", "Connection: Keep-Alive\r\n");
    let taken = policy_post(&request);
    assert_eq!(taken.head_bytes + taken.body_bytes, request.len());
    assert_eq!(taken.body_bytes, "POLICY_TYPE=SEARCH".len());
    assert_eq!(taken.authorization.as_ref().unwrap(), AUTHORIZATION);
    let shouting = request.replace("content-length", "CONTENT-LENGTH");
    assert_eq!(policy_post(&shouting), taken);
    let without_body = post("", "");
    assert_eq!(policy_post(&without_body).body_bytes, 0);
    assert_eq!(policy_post(&without_body.replace(AUTHORIZATION, "")).authorization.unwrap(), "");

    assert_eq!(parse(&request.as_bytes()[..40]), Parsed::Partial);
    assert_eq!(parse(b""), Parsed::Partial);
    let content_length = format!("content-length: {}\r\n", "POLICY_TYPE=SEARCH".len());
    let others = [
        request.replace("POST", "GET"),
        request.replace("/baton/policy", "/baton/policy/status"),
        request.replace("/baton/policy", "/baton/policy?x=1"),
        request.replace("HTTP/1.1", "HTTP/1.0"),
        request.replace("Keep-Alive", "close"),
        request.replace("Keep-Alive", "Upgrade"),
        request.replace(&content_length, "transfer-encoding: chunked\r\n"),
        request.replace(&content_length, ""),
        request.replacen("\r\n\r\n", "\r\ntransfer-encoding: chunked\r\n\r\n", 1),
        post("POLICY_TYPE=SEARCH", "transfer-encoding: chunked\r\n"),
        post("POLICY_TYPE=SEARCH", "content-length: 18\r\n"),
        post("POLICY_TYPE=SEARCH", "expect: 100-continue\r\n"),
        post("POLICY_TYPE=SEARCH", "upgrade: h2c\r\n"),
        request.replace("content-length: 18", "content-length: +18"),
        request.replace("content-length: 18", "content-length: 18, 18"),
        request.replace("content-length: 18", "content-length: 99999999999999999999"),
        post(&"a".repeat(policy::request::REQUEST_BYTES_MAX + 1), ""),
        post("", &"x-filler: a\r\n".repeat(HEADERS_MAX)),
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
        "POST /baton/policy HTTP/1.1\r\nbad header\r\n\r\n".to_owned(),
    ];
    for request in others {
        assert_eq!(parse(request.as_bytes()), Parsed::Other, "{request:?}");
    }
}

/// Answers with the body it was given, and says whether the credentials came with it.
async fn echo(authorization: Option<HeaderValue>, body: Bytes) -> Response {
    let credentials = if authorization.is_some() { "with" } else { "without" };
    (StatusCode::OK, [("x-credentials", credentials)], body).into_response()
}

fn connection() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(64 * 1024)
}

/// Reads answers until `count` of them are complete, then returns their bodies.
async fn answers(client: &mut DuplexStream, count: usize) -> Vec<String> {
    let mut read = Vec::new();
    loop {
        let text = String::from_utf8(read.clone()).unwrap();
        let bodies: Vec<Option<String>> = text.split("HTTP/1.1 ").skip(1).map(body_of).collect();
        if bodies.len() == count && bodies.iter().all(Option::is_some) {
            return bodies.into_iter().flatten().collect();
        }
        let mut buf = [0; 4096];
        let n = client.read(&mut buf).await.unwrap();
        assert_ne!(n, 0, "closed after {text:?}");
        read.extend_from_slice(&buf[..n]);
    }
}

/// An answer's body, once all of it (by its `content-length`) is there.
fn body_of(answer: &str) -> Option<String> {
    let (head, body) = answer.split_once("\r\n\r\n")?;
    assert!(head.starts_with("200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nx-credentials: with\r\n") && head.contains("\r\ndate: "), "{head}");
    let length: usize =
        head.lines().find_map(|line| line.strip_prefix("content-length: "))?.parse().ok()?;
    (body.len() >= length).then(|| body[..length].to_owned())
}

// Goal: pipelined policy POSTs are answered in order, each with its own body, its length and
// the date; at the first other request the connection is handed over from exactly that
// request's first byte, whatever was read past it.
#[tokio::test]
async fn policy_posts_are_answered_in_order_then_the_rest_is_handed_over() {
    let (mut client, server) = connection();
    let status_poll = "GET /baton/policy/status HTTP/1.1\r\nhost: baton\r\n\r\n";
    let pipelined = [post("first=1", ""), post("second=2", ""), status_poll.to_owned()].concat();
    client.write_all(pipelined.as_bytes()).await.unwrap();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(async move { serve(server, echo, TIMEOUT, &shutdown).await });
    assert_eq!(answers(&mut client, 2).await, ["first=1", "second=2"]);

    let Served::HandedOver(mut rest) = served.await.unwrap() else { panic!("closed") };
    client.write_all(b"after").await.unwrap();
    let mut handed = vec![0; status_poll.len() + "after".len()];
    rest.read_exact(&mut handed).await.unwrap();
    assert_eq!(String::from_utf8(handed).unwrap(), format!("{status_poll}after"));
}

// Goal: a body arriving in pieces is answered once whole; a connection closed by its client,
// mid-request or between requests, ends the fast path with nothing handed over.
#[tokio::test]
async fn a_request_is_answered_once_whole_and_a_closed_connection_ends_it() {
    let (mut client, server) = connection();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(async move { serve(server, echo, TIMEOUT, &shutdown).await });
    let request = post("POLICY_TYPE=SEARCH", "");
    for piece in request.as_bytes().chunks(7) {
        client.write_all(piece).await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(answers(&mut client, 1).await, ["POLICY_TYPE=SEARCH"]);
    client.write_all(&request.as_bytes()[..request.len() - 3]).await.unwrap();
    drop(client);
    assert!(matches!(served.await.unwrap(), Served::Closed));
}

// Goal: each request's head must come within the header read deadline, counted afresh for
// each (so a kept connection busy for many deadlines stays open), and a connection silent
// between requests, or stalled in a head, is closed exactly at it; at the shutdown, an idle
// connection is closed at once.
#[tokio::test(start_paused = true)]
async fn heads_must_come_within_the_deadline_and_the_shutdown_closes_idle_connections() {
    let (mut client, server) = connection();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let served = tokio::spawn(async move { serve(server, echo, TIMEOUT, &shutdown).await });
    for round in 0..6 {
        tokio::time::sleep(TIMEOUT * 6 / 10).await;
        client.write_all(post(&format!("round={round}"), "").as_bytes()).await.unwrap();
        assert_eq!(answers(&mut client, 1).await, [format!("round={round}")]);
    }
    assert!(started.elapsed() > 3 * TIMEOUT);
    let last_answer = Instant::now();
    client.write_all(b"POST /baton/po").await.unwrap();
    assert!(matches!(served.await.unwrap(), Served::Closed));
    assert_eq!(last_answer.elapsed(), TIMEOUT);

    let (_client, server) = connection();
    let shutdown = CancellationToken::new();
    let stopping = shutdown.clone();
    let served = tokio::spawn(async move { serve(server, echo, TIMEOUT, &stopping).await });
    tokio::time::sleep(TIMEOUT / 10).await;
    let cancelled = Instant::now();
    shutdown.cancel();
    assert!(matches!(served.await.unwrap(), Served::Closed));
    assert_eq!(cancelled.elapsed(), Duration::ZERO);
}

// Goal: at the shutdown, a request already begun is answered, as its connection's last
// (`connection: close`, then closed, a pipelined one after it unanswered), and a request the
// fast path does not answer is not handed over (hyper would close it unread): closed.
#[tokio::test]
async fn at_the_shutdown_a_request_begun_is_answered_last_and_nothing_is_handed_over() {
    let (mut client, server) = connection();
    let shutdown = CancellationToken::new();
    let stopping = shutdown.clone();
    let served = tokio::spawn(async move { serve(server, echo, TIMEOUT, &stopping).await });
    let request = post("begun=1", "");
    let (begun, rest) = request.split_at(20);
    client.write_all(begun.as_bytes()).await.unwrap();
    tokio::task::yield_now().await;
    shutdown.cancel();
    client.write_all([rest, &post("after=1", "")].concat().as_bytes()).await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("\r\nconnection: close\r\n") && answer.ends_with("begun=1"),
        "{answer}"
    );
    assert!(matches!(served.await.unwrap(), Served::Closed));

    let (mut client, server) = connection();
    let served = tokio::spawn(async move { serve(server, echo, TIMEOUT, &shutdown).await });
    client.write_all(b"GET /baton/policy/status HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(matches!(served.await.unwrap(), Served::Closed));
}
