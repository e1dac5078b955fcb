//! The fast path against what a VCS and a client of another kind send: which heads it takes,
//! the answers it writes, the hand-over, its deadlines and the shutdown.

#![allow(clippy::unwrap_used)]

use super::*;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::io::DuplexStream;
use tokio::time::Instant;

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
    assert_eq!(&request[taken.authorization.clone().unwrap()], AUTHORIZATION);
    let shouting = request.replace("content-length", "CONTENT-LENGTH");
    assert_eq!(policy_post(&shouting), taken);
    let without_body = post("", "");
    assert_eq!(policy_post(&without_body).body_bytes, 0);
    let without_credentials = without_body.replace(AUTHORIZATION, "");
    let taken = policy_post(&without_credentials);
    assert_eq!(&without_credentials[taken.authorization.unwrap()], "");

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

// Goal: every byte httparse lets into an `Authorization` value is one a `HeaderValue` holds:
// the fast path makes the value from its place once the head is parsed, so credentials it
// takes are never lost there (a byte it does not take leaves the request to hyper).
#[test]
fn every_credentials_byte_taken_makes_a_header_value() {
    let (mut taken, mut left) = (0, 0);
    for byte in 0..=u8::MAX {
        let request = post("", "").replace(AUTHORIZATION, "Basic a_b");
        let mut request = request.into_bytes();
        let at = request.iter().position(|&b| b == b'_').unwrap();
        request[at] = byte;
        match parse(&request) {
            Parsed::PolicyPost(post) => {
                let value = &request[post.authorization.unwrap()];
                assert_eq!(value, [b'B', b'a', b's', b'i', b'c', b' ', b'a', byte, b'b']);
                assert!(HeaderValue::from_bytes(value).is_ok(), "{byte:#04x}");
                taken += 1;
            }
            Parsed::Other | Parsed::Partial => left += 1,
        }
    }
    assert!(taken > 200 && left > 0, "taken {taken}, left {left}");
}

/// The head [`echo`] answers behind, as a CPL's.
const ECHO_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nx-credentials: with\r\n";

/// Answers with the body it was given, as a CPL is answered (behind [`ECHO_HEAD`]), once it
/// checked the credentials came with it as sent (every request of these tests sends them).
async fn echo(memory: (), authorization: Option<HeaderValue>, body: Bytes) -> (PolicyAnswer, ()) {
    assert_eq!(authorization.unwrap(), AUTHORIZATION, "the fast path passed on the credentials");
    (PolicyAnswer::Cpl(body), memory)
}

/// As [`echo`], whatever the credentials: the answer is them, a space, then the body.
async fn echo_credentials(
    memory: (),
    authorization: Option<HeaderValue>,
    body: Bytes,
) -> (PolicyAnswer, ()) {
    let credentials = authorization.unwrap().to_str().unwrap().to_owned();
    let answer = format!("{credentials} {}", String::from_utf8_lossy(&body));
    (PolicyAnswer::Cpl(Bytes::from(answer)), memory)
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

// Goal: pipelined policy POSTs are answered in order, each with its own credentials and body,
// its length and the date; at the first other request the connection is handed over from
// exactly that request's first byte, whatever was read past it.
#[tokio::test]
async fn policy_posts_are_answered_in_order_then_the_rest_is_handed_over() {
    let (mut client, server) = connection();
    let status_poll = "GET /baton/policy/status HTTP/1.1\r\nhost: baton\r\n\r\n";
    // Other credentials, further into the head.
    let second = post("second=2", "").replace(
        &format!("host: baton\r\nauthorization: {AUTHORIZATION}"),
        "host: baton\r\nx-filler: 1\r\nauthorization: Basic c2Vjb25kOnBhc3N3b3Jk",
    );
    let pipelined = [post("first=1", ""), second, status_poll.to_owned()].concat();
    client.write_all(pipelined.as_bytes()).await.unwrap();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(async move {
        serve(server, (), echo_credentials, ECHO_HEAD, TIMEOUT, &shutdown).await
    });
    let first = format!("{AUTHORIZATION} first=1");
    assert_eq!(
        answers(&mut client, 2).await,
        [first.as_str(), "Basic c2Vjb25kOnBhc3N3b3Jk second=2"]
    );

    let Served::HandedOver(mut rest) = served.await.unwrap() else { panic!("closed") };
    client.write_all(b"after").await.unwrap();
    let mut handed = vec![0; status_poll.len() + "after".len()];
    rest.read_exact(&mut handed).await.unwrap();
    assert_eq!(String::from_utf8(handed).unwrap(), format!("{status_poll}after"));
}

// Goal: what a connection remembers (`services::policy::Caller` in the daemon) goes from each
// answer to the next on the same connection.
#[tokio::test]
async fn each_answer_gets_what_the_one_before_it_left_to_remember() {
    let (mut client, server) = connection();
    let pipelined = [post("a=1", ""), post("b=2", ""), post("c=3", "")].concat();
    client.write_all(pipelined.as_bytes()).await.unwrap();
    let counting = |answered: usize, _, _| async move {
        let answer = (StatusCode::OK, [("x-credentials", "with")], answered.to_string());
        (PolicyAnswer::Other(answer.into_response()), answered + 1)
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(async move { serve(server, 0, counting, ECHO_HEAD, TIMEOUT, &shutdown).await });
    assert_eq!(answers(&mut client, 3).await, ["0", "1", "2"]);
}

// Goal: a body arriving in pieces is answered once whole; a connection closed by its client,
// mid-request or between requests, ends the fast path with nothing handed over.
#[tokio::test]
async fn a_request_is_answered_once_whole_and_a_closed_connection_ends_it() {
    let (mut client, server) = connection();
    let shutdown = CancellationToken::new();
    let served =
        tokio::spawn(async move { serve(server, (), echo, ECHO_HEAD, TIMEOUT, &shutdown).await });
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
    let served =
        tokio::spawn(async move { serve(server, (), echo, ECHO_HEAD, TIMEOUT, &shutdown).await });
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
    let served =
        tokio::spawn(async move { serve(server, (), echo, ECHO_HEAD, TIMEOUT, &stopping).await });
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
    let served =
        tokio::spawn(async move { serve(server, (), echo, ECHO_HEAD, TIMEOUT, &stopping).await });
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
    let served =
        tokio::spawn(async move { serve(server, (), echo, ECHO_HEAD, TIMEOUT, &shutdown).await });
    client.write_all(b"GET /baton/policy/status HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(matches!(served.await.unwrap(), Served::Closed));
}

/// One seeded variation of a VCS's POST: its framing headers in other cases, spellings and
/// orders, other line ends, duplicates, then a few bytes flipped, dropped or doubled.
fn varied_post(rng: &mut model::rng::SeededRng) -> Vec<u8> {
    let body = ["", "POLICY_TYPE=SEARCH", "a=1&b=%20"][rng.below(3) as usize];
    let length = body.len();
    let framing = [
        format!("content-length: {length}\r\n"),
        format!("Content-Length: {length}\r\n"),
        format!("content-length: 0{length}\r\n"),
        format!("content-length:{length}  \r\n"),
        format!("content-length: {}\r\n", length + 1),
        format!("content-length: {length}\r\ncontent-length: {length}\r\n"),
        format!("content-length: {length}, {length}\r\n"),
        format!("content-length: {length}\r\ntransfer-encoding: chunked\r\n"),
        format!("transfer-encoding: identity\r\ncontent-length: {length}\r\n"),
        format!("content-length: {length}\r\n x-folded: 1\r\n"),
        format!("content-length : {length}\r\n"),
        format!("content-length: {length}\r\nconnection: keep-alive, close\r\n"),
        String::new(),
    ];
    let framing = &framing[rng.below(framing.len() as u64) as usize];
    let mut head = format!("POST /baton/policy HTTP/1.1\r\nhost: baton\r\n{framing}");
    if rng.chance(20) {
        head = head.replace("\r\n", "\n");
    }
    let mut bytes = format!("{head}\r\n{body}").into_bytes();
    for _ in 0..rng.below(3) {
        let at = rng.below(bytes.len() as u64) as usize;
        match rng.below(3) {
            0 => bytes[at] = b"\r\n :,0a-"[rng.below(8) as usize],
            1 => drop(bytes.remove(at)),
            _ => bytes.insert(at, bytes[at]),
        }
    }
    bytes
}

/// The requests hyper reads from `bytes` (method, path and body), in order.
async fn as_hyper_reads(bytes: Vec<u8>) -> Vec<(String, String, Bytes)> {
    use http_body_util::BodyExt as _;
    let (mut client, server) = connection();
    client.write_all(&bytes).await.unwrap();
    client.shutdown().await.unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let service =
        hyper::service::service_fn(move |request: axum::http::Request<hyper::body::Incoming>| {
            let recorded = recorded.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.map(|whole| whole.to_bytes()).unwrap_or_default();
                let read = (parts.method.to_string(), parts.uri.to_string(), body);
                recorded.lock().unwrap().push(read);
                Ok::<_, std::convert::Infallible>(axum::http::Response::new(String::new()))
            }
        });
    // Half-closed: the input's end is read at once, and would otherwise end the connection
    // before the requests queued behind the first.
    let connection = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(hyper_util::rt::TokioIo::new(server), service);
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
    drop(client);
    std::mem::take(&mut *seen.lock().unwrap())
}

// Goal: no request smuggling between the fast path and hyper. For 10,000 seeded
// variations of a POST's framing, followed by another request: whenever the fast path takes
// one, hyper reads the same request, with the same body, and the next request starts where
// the fast path would hand over.
#[tokio::test]
async fn the_fast_path_frames_every_request_it_takes_as_hyper_does() {
    let mut rng = model::rng::SeededRng::new(0x5EED_FA57);
    let (mut taken, mut left) = (0, 0);
    for _ in 0..10_000 {
        let mut bytes = varied_post(&mut rng);
        let Parsed::PolicyPost(post) = parse(&bytes) else {
            left += 1;
            continue;
        };
        taken += 1;
        // The body made as long as the head declares, so the request ends where it says.
        let request_bytes = post.head_bytes + post.body_bytes;
        bytes.resize(request_bytes, b'x');
        let body = Bytes::copy_from_slice(&bytes[post.head_bytes..]);
        bytes.extend_from_slice(b"GET /next HTTP/1.1\r\nhost: baton\r\n\r\n");
        let reads = as_hyper_reads(bytes.clone()).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(reads.len() == 2, "hyper read {reads:?} from {text:?}");
        assert_eq!(
            (reads[0].0.as_str(), reads[0].1.as_str()),
            ("POST", "/baton/policy"),
            "{text:?}"
        );
        assert_eq!(reads[0].2, body, "{text:?}");
        assert_eq!((reads[1].0.as_str(), reads[1].1.as_str()), ("GET", "/next"), "{text:?}");
    }
    // Both sides of the comparison are exercised.
    assert!(taken > 1_500 && left > 1_500, "taken {taken}, left to hyper {left}");
}

/// What [`write`] sends for `answer`, its date line left out (it may move on a second).
async fn written_without_date(answer: PolicyAnswer, cpl_head: &[u8], last: bool) -> String {
    let (mut sent, mut scratch) = (Vec::new(), Vec::new());
    write(&mut sent, Reply { answer, cpl_head, last }, &mut scratch).await.unwrap();
    let text = String::from_utf8(sent).unwrap();
    let date = text.lines().find(|line| line.starts_with("date: ")).unwrap().to_owned();
    text.replace(&format!("{date}\r\n"), "")
}

// Goal: a CPL written behind the head made once is byte for byte what writing the response
// built for it gives, on a listener that adds no header and on the admin listener (its
// security headers), as a connection's last answer too.
#[tokio::test]
async fn a_cpl_behind_the_head_made_once_is_written_as_its_response_would_be() {
    let cpl = Bytes::from_static(b"<cpl><location><rule-switch/></location></cpl>");
    let no_header: fn(&mut HeaderMap) = |_| {};
    for finish in [no_header, crate::adapters::add_security_headers] {
        for last in [false, true] {
            let made =
                written_without_date(PolicyAnswer::Cpl(cpl.clone()), &cpl_head(finish), last).await;
            let mut response = PolicyAnswer::Cpl(cpl.clone()).into_response();
            finish(response.headers_mut());
            let built = written_without_date(PolicyAnswer::Other(response), b"", last).await;
            assert_eq!(made, built);
            assert!(made.starts_with("HTTP/1.1 200 OK\r\ncontent-type: "), "{made}");
            assert!(made.ends_with("\r\n\r\n<cpl><location><rule-switch/></location></cpl>"));
        }
    }
}
