//! A fixed-rate HTTP/1.1 load generator lean enough not to be what it measures: one thread,
//! one epoll, a timerfd for the schedule, keep-alive connections that each carry one request
//! at a time. Request `k` is due at `start + k / rate`; its latency runs from when it was due,
//! not from when a connection was free to send it, so a server's stall shows in every request
//! it held up (no coordinated omission).
//!
//! Why not oha (`--qps --latency-correction`), which the policy bench used before: on a
//! 2-core machine, against nginx serving a fixed body at 37,000 requests/s, oha gave a p50 of
//! 0.49–0.62 ms and a p99 of 1.8–4.1 ms, with one worker thread or two, pinned to its own core
//! or not; this loop gave 0.07 ms and 0.26–0.84 ms. oha measured itself. This loop costs a
//! `write`, a `read` and a share of an `epoll_wait` per request.

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

/// What to send, to where, how often and for how long.
pub struct Plan<'a> {
    pub address: SocketAddr,
    /// One whole HTTP/1.1 request that keeps the connection alive.
    pub request: &'a [u8],
    pub rate_per_s: f64,
    pub duration: Duration,
    pub connections: usize,
}

/// Latencies from each request's due time to its whole answer.
pub struct Report {
    pub answered: usize,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
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
}

/// Runs `plan`; fails on any answer other than 200, a connection closed under a request, or a
/// server that leaves requests unanswered [`DRAIN_TIMEOUT_MS`] past the schedule's end.
pub fn run(plan: &Plan<'_>) -> anyhow::Result<Report> {
    anyhow::ensure!(plan.rate_per_s > 0.0 && plan.connections > 0, "nothing to send");
    let mut generator = Generator::new(plan)?;
    let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
    while (generator.latencies_us.len() as u64) < generator.total {
        generator.dispatch(Instant::now())?;
        let wait = generator.arm()?;
        let ready = generator.epoll.wait(&mut events, wait)?;
        let now = Instant::now();
        for event in &events[..ready] {
            if event.data() == TIMER_KEY {
                // Only resets the timer's readiness; the schedule is read from the clock.
                let _ = generator.timer.wait();
            } else {
                generator.arrive(event.data() as usize, now)?;
            }
        }
    }
    Ok(report(generator.latencies_us, generator.start.elapsed()))
}

impl<'a> Generator<'a> {
    fn new(plan: &'a Plan<'a>) -> anyhow::Result<Generator<'a>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        epoll.add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER_KEY))?;
        let connections = (0..plan.connections)
            .map(|key| connect(plan, &epoll, key))
            .collect::<Result<_, _>>()?;
        let total = (plan.rate_per_s * plan.duration.as_secs_f64()).round() as u64;
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
        while !self.waiting.is_empty() {
            let Some(key) = self.idle.pop_front() else { break };
            send(&mut self.connections[key], self.plan.request, self.waiting.pop_front())?;
        }
        let drained_by = self.start + self.plan.duration + Duration::from_millis(DRAIN_TIMEOUT_MS);
        if now > drained_by {
            let unanswered = self.total - self.latencies_us.len() as u64;
            bail!("{unanswered} requests unanswered {DRAIN_TIMEOUT_MS} ms after the load");
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

    fn arrive(&mut self, key: usize, now: Instant) -> anyhow::Result<()> {
        match receive(&mut self.connections[key], now)? {
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
        let answered = self.connections[key].answered;
        self.connections[key] = connect(self.plan, &self.epoll, key)?;
        self.connections[key].answered = answered;
        Ok(())
    }
}

fn connect(plan: &Plan<'_>, epoll: &Epoll, key: usize) -> anyhow::Result<Connection> {
    let stream = TcpStream::connect(plan.address)
        .with_context(|| format!("connecting to {}", plan.address))?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    epoll.add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, key as u64))?;
    Ok(Connection { stream, due: None, received: Vec::new(), answered: 0 })
}

fn send(connection: &mut Connection, request: &[u8], due: Option<Instant>) -> anyhow::Result<()> {
    // A request of a few hundred bytes always fits an idle connection's socket buffer.
    let written = connection.stream.write(request).context("sending a request")?;
    anyhow::ensure!(
        written == request.len(),
        "a request did not fit the socket ({written} of {} bytes sent)",
        request.len()
    );
    connection.due = due;
    Ok(())
}

/// Reads what arrived on `connection`.
fn receive(connection: &mut Connection, now: Instant) -> anyhow::Result<Arrival> {
    let mut buffer = [0_u8; READ_BUFFER_BYTES];
    let closed = loop {
        match connection.stream.read(&mut buffer) {
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
        anyhow::ensure!(answer.length == connection.received.len(), "an answer nobody asked for");
        let due = connection.due.take().context("an answer nobody asked for")?;
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
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    let header = |wanted: &str| {
        headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(wanted)).map(|(_, value)| *value)
    };
    let length: usize =
        header("content-length").context("an answer without Content-Length")?.parse()?;
    let close = header("connection").is_some_and(|value| value.eq_ignore_ascii_case("close"));
    let length = head_end + 4 + length;
    Ok((bytes.len() >= length).then_some(Answer { length, close }))
}

fn report(mut latencies_us: Vec<u64>, elapsed: Duration) -> Report {
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

    fn one_connection(address: SocketAddr) -> Plan<'static> {
        let (rate_per_s, duration) = (1_000.0, Duration::from_secs(1));
        Plan { address, request: REQUEST, rate_per_s, duration, connections: 1 }
    }

    // Goal: a server's stall shows in every request that fell due during it, not only in the
    // one it held (coordinated omission): over one connection at 1,000 requests/s, a 200 ms
    // stall holds up about 200 of the 1,000 requests.
    #[test]
    fn a_stall_shows_in_every_request_due_during_it() {
        let stall = Duration::from_millis(200);
        let report = run(&one_connection(server(Behaviour { stall_at: 300, stall, ..PROMPT })));
        let report = report.unwrap();
        assert!(report.p50_ms < 20.0, "p50 {} ms without a stall", report.p50_ms);
        assert!(report.p99_ms > 100.0, "p99 {} ms: the stall was hidden", report.p99_ms);
        assert!(report.max_ms >= 200.0, "max {} ms", report.max_ms);
    }

    // Goal: a server that closes its connections now and then, saying so (nginx does after
    // 1,000 requests), is measured as any client would see it: the connection is opened again
    // and every request is answered.
    #[test]
    fn a_connection_the_server_closes_is_opened_again() {
        let closing = server(Behaviour { answers_per_connection: 7, ..PROMPT });
        let report = run(&one_connection(closing)).unwrap();
        assert_eq!(report.answered, 1_000);
    }

    // Goal: an answer other than 200 fails the run and says what came back.
    #[test]
    fn an_answer_other_than_200_fails_the_run() {
        let refusing = server(Behaviour { status: "503 Service Unavailable", ..PROMPT });
        let error = run(&one_connection(refusing)).err().unwrap();
        assert!(format!("{error:#}").contains("503 Service Unavailable"), "{error:#}");
    }
}
