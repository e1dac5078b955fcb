//! A fixed-rate HTTP/1.1 load generator lean enough not to be what it measures: one thread,
//! one epoll, a timerfd for the schedule, keep-alive connections that each carry one request
//! at a time. Request `k` is due at `start + k / rate`; its latency runs from when it was due,
//! not from when a connection was free to send it, so a server's stall shows in every request
//! it held up (no coordinated omission).
//!
//! Why not oha (`--qps --latency-correction`), which the policy bench used before: on a
//! 2-core machine, against nginx serving a fixed body at 37,000 requests/s, oha gave a p50 of
//! 0.49–0.62 ms and a p99 of 1.8–4.1 ms, with one worker thread or two, pinned to its own core
//! or not; this loop gave 0.07 ms and 0.17–0.41 ms. oha measured itself. This loop costs a
//! `write`, two `read`s (the second finds nothing) and, when it waits for the next due time, a
//! `timerfd_settime`, an `epoll_wait` and a timer read per request.

use anyhow::{Context, bail};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The timer's key among epoll's events; a connection's key is its index.
const TIMER_KEY: u64 = u64::MAX;
const EVENTS_PER_WAIT: usize = 64;
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// How long the last requests may take after the schedule ends before the run fails.
const DRAIN_TIMEOUT_MS: u64 = 5_000;
/// epoll's wait when nothing is due: bounds how late a dead server is noticed.
const IDLE_WAIT_MS: u16 = 100;
/// A larger answer is not what these benches send; refusing it bounds the buffer.
const ANSWER_BYTES_MAX: usize = 1 << 20;
/// Bounds a plan's memory: one latency is kept per request.
const REQUESTS_MAX: u64 = 10_000_000;
/// Bounds a plan's sockets, well under a process's default limit of open files.
const CONNECTIONS_MAX: usize = 512;
/// How long opening a connection may take: a lost SYN must not stall the whole load.
const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// What to send, to where, how often and for how long.
pub struct Plan<'a> {
    /// The server's address (HTTP, no TLS).
    pub address: SocketAddr,
    /// One whole HTTP/1.1 request that keeps the connection alive.
    pub request: &'a [u8],
    /// Requests falling due per second, evenly spaced.
    pub rate_per_s: f64,
    /// How long requests fall due; the last answers may come up to [`DRAIN_TIMEOUT_MS`] later.
    pub duration: Duration,
    /// Keep-alive connections, each carrying one request at a time (at most
    /// [`CONNECTIONS_MAX`]).
    pub connections: usize,
}

/// Latencies from each request's due time to its whole answer.
pub struct Report {
    /// Requests answered: all of the plan's, or the run fails.
    pub answered: usize,
    /// Answers per second from the start to the last answer: below the plan's rate only if
    /// the last answers came late.
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Connections opened, the first ones included: more than the plan's once the server
    /// closed some.
    pub connections_opened: usize,
}

struct Connection {
    stream: TcpStream,
    /// When the request it carries was due; `None` while idle.
    due: Option<Instant>,
    received: Vec<u8>,
    answered: u64,
}

/// What a connection's readiness brought.
enum Arrival {
    /// Part of an answer, or nothing.
    Partial,
    /// A whole answer; `close`: the server said it closes the connection after it (nginx
    /// does after 1,000 requests), so it is opened again, as any client would.
    Answer { latency: Duration, close: bool },
    /// The server closed an idle connection (its keep-alive timeout): opened again.
    ClosedWhileIdle,
}

/// The run's state: the schedule, the connections and the latencies so far.
struct Generator<'a> {
    plan: &'a Plan<'a>,
    epoll: Epoll,
    timer: TimerFd,
    connections: Vec<Connection>,
    /// First in, first out: every connection stays in use, as a server would close one left
    /// idle for long.
    idle: VecDeque<usize>,
    /// Due times of requests no connection was free to send yet.
    waiting: VecDeque<Instant>,
    start: Instant,
    scheduled: u64,
    total: u64,
    latencies_us: Vec<u64>,
    connections_opened: usize,
    /// Every read lands here first: one buffer for the run, not one per read.
    read_buffer: Box<[u8]>,
}

/// Runs `plan`; fails on any answer other than 200, a connection closed under a request, or a
/// server that leaves requests unanswered [`DRAIN_TIMEOUT_MS`] past the schedule's end.
pub fn run(plan: &Plan<'_>) -> anyhow::Result<Report> {
    let mut generator = Generator::new(plan)?;
    let drained_by = generator.start + plan.duration + Duration::from_millis(DRAIN_TIMEOUT_MS);
    let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
    while (generator.latencies_us.len() as u64) < generator.total {
        let now = Instant::now();
        if now > drained_by {
            let unanswered = generator.total - generator.latencies_us.len() as u64;
            bail!("{unanswered} requests unanswered {DRAIN_TIMEOUT_MS} ms after the load");
        }
        generator.dispatch(now)?;
        let wait = generator.arm()?;
        let ready = match generator.epoll.wait(&mut events, wait) {
            Ok(ready) => ready,
            // A stop and continue, or a tracer attaching: nothing happened to the load.
            Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => return Err(error).context("waiting for answers"),
        };
        for event in &events[..ready] {
            if event.data() == TIMER_KEY {
                // Only resets the timer's readiness; the schedule is read from the clock.
                let _ = generator.timer.wait();
            } else {
                generator.arrive(event.data() as usize)?;
            }
        }
    }
    let elapsed = generator.start.elapsed();
    Ok(report(generator.latencies_us, elapsed, generator.connections_opened))
}

impl<'a> Generator<'a> {
    fn new(plan: &'a Plan<'a>) -> anyhow::Result<Generator<'a>> {
        let total = (plan.rate_per_s * plan.duration.as_secs_f64()).round();
        anyhow::ensure!(
            (1.0..=REQUESTS_MAX as f64).contains(&total),
            "{total} requests planned; 1 to {REQUESTS_MAX} can be measured"
        );
        anyhow::ensure!(
            (1..=CONNECTIONS_MAX).contains(&plan.connections),
            "{} connections planned; 1 to {CONNECTIONS_MAX} can be opened",
            plan.connections
        );
        let total = total as u64;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        epoll.add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER_KEY))?;
        let connections = (0..plan.connections)
            .map(|key| connect(plan, &epoll, key))
            .collect::<Result<_, _>>()?;
        Ok(Generator {
            plan,
            epoll,
            timer,
            connections,
            idle: (0..plan.connections).collect(),
            waiting: VecDeque::new(),
            start: Instant::now(),
            scheduled: 0,
            total,
            latencies_us: Vec::with_capacity(total as usize),
            connections_opened: plan.connections,
            read_buffer: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
        })
    }

    /// When request `k` is due.
    fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.plan.rate_per_s)
    }

    /// Queues the requests due by `now` and sends as many as there are idle connections.
    fn dispatch(&mut self, now: Instant) -> anyhow::Result<()> {
        while self.scheduled < self.total && self.due(self.scheduled) <= now {
            self.waiting.push_back(self.due(self.scheduled));
            self.scheduled += 1;
        }
        while let Some(&due) = self.waiting.front() {
            let Some(key) = self.idle.pop_front() else { break };
            self.waiting.pop_front();
            send(&mut self.connections[key], self.plan.request, due)?;
        }
        Ok(())
    }

    /// Sets the timer for the next request's due time when none is waiting; returns how long
    /// epoll may wait: not at all if a request is already due.
    fn arm(&self) -> anyhow::Result<EpollTimeout> {
        if self.scheduled == self.total || !self.waiting.is_empty() {
            return Ok(EpollTimeout::from(IDLE_WAIT_MS));
        }
        let until = self.due(self.scheduled).saturating_duration_since(Instant::now());
        if until.is_zero() {
            return Ok(EpollTimeout::ZERO);
        }
        let expiration = Expiration::OneShot(TimeSpec::from_duration(until));
        self.timer.set(expiration, TimerSetTimeFlags::empty())?;
        Ok(EpollTimeout::from(IDLE_WAIT_MS))
    }

    fn arrive(&mut self, key: usize) -> anyhow::Result<()> {
        match receive(&mut self.connections[key], &mut self.read_buffer)? {
            Arrival::Partial => {}
            Arrival::Answer { latency, close } => {
                self.latencies_us.push(latency.as_micros() as u64);
                if close {
                    self.reconnect(key)?;
                }
                self.idle.push_back(key);
            }
            // Still in `idle`: the next request finds it open again.
            Arrival::ClosedWhileIdle => self.reconnect(key)?,
        }
        Ok(())
    }

    fn reconnect(&mut self, key: usize) -> anyhow::Result<()> {
        self.epoll.delete(&self.connections[key].stream)?;
        self.connections[key] = connect(self.plan, &self.epoll, key)?;
        self.connections_opened += 1;
        Ok(())
    }
}

fn connect(plan: &Plan<'_>, epoll: &Epoll, key: usize) -> anyhow::Result<Connection> {
    let stream =
        TcpStream::connect_timeout(&plan.address, Duration::from_millis(CONNECT_TIMEOUT_MS))
            .with_context(|| format!("connecting to {}", plan.address))?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    epoll.add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, key as u64))?;
    Ok(Connection { stream, due: None, received: Vec::new(), answered: 0 })
}

fn send(connection: &mut Connection, request: &[u8], due: Instant) -> anyhow::Result<()> {
    // A request of a few hundred bytes always fits an idle connection's socket buffer.
    let written = connection.stream.write(request).context("sending a request")?;
    anyhow::ensure!(
        written == request.len(),
        "a request did not fit the socket ({written} of {} bytes sent)",
        request.len()
    );
    connection.due = Some(due);
    Ok(())
}

/// Reads what arrived on `connection`, through `buffer`.
fn receive(connection: &mut Connection, buffer: &mut [u8]) -> anyhow::Result<Arrival> {
    let closed = loop {
        match connection.stream.read(buffer) {
            Ok(0) => break true,
            Ok(read) => connection.received.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => break false,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error).context("reading an answer"),
        }
        let received = connection.received.len();
        anyhow::ensure!(received <= ANSWER_BYTES_MAX, "an answer over {ANSWER_BYTES_MAX} bytes");
    };
    if let Some(answer) = whole_answer(&connection.received)? {
        // Timed here, not when epoll returned: handling the events before it takes time too.
        let now = Instant::now();
        let extra = connection.received.len() - answer.length;
        anyhow::ensure!(extra == 0, "{extra} bytes after an answer, which asked for none");
        let due = connection.due.take().context("an answer to no request")?;
        connection.received.clear();
        connection.answered += 1;
        let latency = now.saturating_duration_since(due);
        return Ok(Arrival::Answer { latency, close: answer.close || closed });
    }
    match (closed, connection.due.is_none() && connection.received.is_empty()) {
        (false, _) => Ok(Arrival::Partial),
        (true, true) => Ok(Arrival::ClosedWhileIdle),
        (true, false) => bail!(
            "the server closed a connection under a request, after {} answers on it",
            connection.answered
        ),
    }
}

/// A whole answer at the start of the bytes received.
struct Answer {
    length: usize,
    close: bool,
}

/// The whole answer at the start of `bytes`, once it is all in; only a 200 with a
/// `Content-Length` is accepted.
fn whole_answer(bytes: &[u8]) -> anyhow::Result<Option<Answer>> {
    let Some(head_end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&bytes[..head_end]).context("an answer's head is not UTF-8")?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    anyhow::ensure!(status.starts_with("HTTP/1.1 200 "), "answered {status:?}");
    let header = |wanted: &str| {
        lines
            .clone()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.trim())
    };
    let length = header("content-length").context("an answer without Content-Length")?;
    let length: usize =
        length.parse().with_context(|| format!("an answer's Content-Length is {length:?}"))?;
    let close = header("connection").is_some_and(|value| value.eq_ignore_ascii_case("close"));
    let length = head_end + 4 + length;
    Ok((bytes.len() >= length).then_some(Answer { length, close }))
}

fn report(mut latencies_us: Vec<u64>, elapsed: Duration, connections_opened: usize) -> Report {
    latencies_us.sort_unstable();
    let at = |fraction: f64| {
        let index = ((latencies_us.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
        latencies_us.get(index).copied().unwrap_or_default() as f64 / 1e3
    };
    Report {
        answered: latencies_us.len(),
        requests_per_s: latencies_us.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        connections_opened,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::net::TcpListener;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

    /// How the test server answers.
    struct Behaviour {
        status: &'static str,
        /// Sleeps `stall` before answering request number `stall_at` (counted from 1).
        stall_at: usize,
        stall: Duration,
        /// Closes the connection after this many answers on it, saying so, as nginx does.
        answers_per_connection: usize,
    }

    const PROMPT: Behaviour = Behaviour {
        status: "200 OK",
        stall_at: 0,
        stall: Duration::ZERO,
        answers_per_connection: usize::MAX,
    };

    /// A server that takes one connection at a time and answers as `behaviour` says.
    fn server(behaviour: Behaviour) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut answered = 0;
            for stream in listener.incoming() {
                serve(stream.unwrap(), &behaviour, &mut answered);
            }
        });
        address
    }

    fn serve(mut stream: TcpStream, behaviour: &Behaviour, answered: &mut usize) {
        let (mut unanswered_bytes, mut answered_here) = (0, 0);
        let mut buffer = [0_u8; 4096];
        while let Ok(read @ 1..) = stream.read(&mut buffer) {
            unanswered_bytes += read;
            while unanswered_bytes >= REQUEST.len() {
                unanswered_bytes -= REQUEST.len();
                (*answered, answered_here) = (*answered + 1, answered_here + 1);
                if *answered == behaviour.stall_at {
                    std::thread::sleep(behaviour.stall);
                }
                let last = answered_here == behaviour.answers_per_connection;
                let connection = if last { "Connection: close\r\n" } else { "" };
                let status = behaviour.status;
                let answer =
                    format!("HTTP/1.1 {status}\r\n{connection}Content-Length: 2\r\n\r\nok");
                if stream.write_all(answer.as_bytes()).is_err() || last {
                    return;
                }
            }
        }
    }

    /// One connection at 200 requests/s: slow enough for a debug build on a loaded machine
    /// to keep up (5 ms a round trip), so only the server's behaviour shows.
    fn one_connection(address: SocketAddr, duration: Duration) -> Plan<'static> {
        Plan { address, request: REQUEST, rate_per_s: 200.0, duration, connections: 1 }
    }

    // Goal: a server's stall shows in every request that fell due during it, not only in the
    // one it held (coordinated omission): over one connection at 200 requests/s for 2 s, a
    // 500 ms stall holds up about 100 of the 400 requests.
    #[test]
    fn a_stall_shows_in_every_request_due_during_it() {
        let stall = Duration::from_millis(500);
        let stalling = server(Behaviour { stall_at: 100, stall, ..PROMPT });
        let report = run(&one_connection(stalling, Duration::from_secs(2))).unwrap();
        assert!(report.p50_ms < 100.0, "p50 {} ms without a stall", report.p50_ms);
        assert!(report.p99_ms > 250.0, "p99 {} ms: the stall was hidden", report.p99_ms);
        assert!(report.max_ms >= 500.0, "max {} ms", report.max_ms);
    }

    // Goal: a server that closes its connections now and then, saying so (nginx does after
    // 1,000 requests), is measured as any client would see it: the connection is opened again
    // and every request is answered.
    #[test]
    fn a_connection_the_server_closes_is_opened_again() {
        let closing = server(Behaviour { answers_per_connection: 7, ..PROMPT });
        let report = run(&one_connection(closing, Duration::from_secs(1))).unwrap();
        assert_eq!(report.answered, 200);
        assert_eq!(report.connections_opened, 200_usize.div_ceil(7));
    }

    // Goal: an answer other than 200 fails the run and says what came back.
    #[test]
    fn an_answer_other_than_200_fails_the_run() {
        let refusing = server(Behaviour { status: "503 Service Unavailable", ..PROMPT });
        let error = run(&one_connection(refusing, Duration::from_secs(1))).err().unwrap();
        assert!(format!("{error:#}").contains("503 Service Unavailable"), "{error:#}");
    }

    // Goal: an answer counts once all of it is in, however it was cut into reads; one that
    // cannot be measured (chunked, a bad length) fails with what was wrong.
    #[test]
    fn an_answer_counts_once_whole_and_a_chunked_one_is_refused() {
        let answer = b"HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 2\r\n\r\nok";
        for cut in 0..answer.len() {
            assert!(whole_answer(&answer[..cut]).unwrap().is_none(), "whole at {cut} bytes");
        }
        let whole = whole_answer(answer).unwrap().unwrap();
        assert!(whole.length == answer.len() && whole.close);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let error = whole_answer(chunked).err().unwrap();
        assert!(format!("{error:#}").contains("without Content-Length"), "{error:#}");
        let error = whole_answer(b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\n").err().unwrap();
        assert!(format!("{error:#}").contains("\"two\""), "{error:#}");
    }

    // Goal: a server closing an idle connection (its keep-alive timeout) only has it opened
    // again; closing one that carries a request fails the run and says so.
    #[test]
    fn a_close_while_idle_is_told_apart_from_one_under_a_request() {
        for carrying_a_request in [false, true] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            stream.set_nonblocking(true).unwrap();
            drop(listener.accept().unwrap());
            let due = carrying_a_request.then(Instant::now);
            let mut connection = Connection { stream, due, received: Vec::new(), answered: 3 };
            let deadline = Instant::now() + Duration::from_secs(10);
            let arrival = loop {
                match receive(&mut connection, &mut [0; 64]) {
                    Ok(Arrival::Partial) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    other => break other,
                }
            };
            match (carrying_a_request, arrival) {
                (false, Ok(Arrival::ClosedWhileIdle)) => {}
                (true, Err(error)) => {
                    assert!(format!("{error:#}").contains("under a request, after 3 answers"));
                }
                (_, other) => {
                    panic!("carrying a request: {carrying_a_request}, got {:?}", other.map(|_| ()))
                }
            }
        }
    }
}
