//! Unit tests of the push and catch-up rules, between two in-memory logs with a perfect
//! network (the simulation covers a lossy one).
#![allow(clippy::unwrap_used)]

use super::*;
use eventlog::NewEvent;
use model::Hlc;

fn peer(index: u8) -> PeerId {
    PeerId([index; 16])
}

struct Node {
    log: EventLog,
    replicator: Replicator,
}

fn node(index: u8) -> Node {
    Node {
        log: EventLog::open_in_memory(peer(index)).unwrap(),
        replicator: Replicator::new(peer(index), [peer(1), peer(2)]),
    }
}

/// Appends `count` shared events of `payload_bytes` each.
fn write(node: &mut Node, count: usize, payload_bytes: usize) -> Vec<StoredEvent> {
    let first = node.log.last_position();
    let events: Vec<NewEvent> = (0..count)
        .map(|i| NewEvent {
            stream: Stream::Shared,
            hlc: Hlc { wall_ms: 1_000 + first + i as u64, counter: 0 },
            actor: "test".to_owned(),
            kind: "test.saved".to_owned(),
            version: 1,
            payload: vec![7; payload_bytes],
        })
        .collect();
    node.log.append(&events).unwrap()
}

fn sends_to(outputs: &[Output], to: PeerId) -> Vec<Message> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Send { to: peer, message } if *peer == to => Some(message.clone()),
            _ => None,
        })
        .collect()
}

// Goal: catching up moves large batches bounded in bytes, the next one asked for only when the
// previous one is stored, and needs no summary tick to finish.
#[test]
fn catch_up_streams_byte_bounded_batches_each_asked_for_by_the_last() {
    let (mut a, mut b) = (node(1), node(2));
    let payload_bytes = 1_000;
    let written = write(&mut a, 3_000, payload_bytes);
    let event_size = event_bytes(&written[0]);
    // B asks once (a summary); from then on only answers travel, never a tick.
    let mut to_a = vec![Message::Summary { heads: shared_heads(&b.log) }];
    let mut batches = Vec::new();
    while let Some(message) = to_a.pop() {
        let answers = a.replicator.receive(peer(2), message, &mut a.log).unwrap();
        for message in sends_to(&answers, peer(2)) {
            if let Message::Events { events } = &message {
                batches.push(events.len());
                let bytes: usize = events.iter().map(event_bytes).sum();
                assert!(bytes < CATCH_UP_BATCH_BYTES_MAX + event_size, "batch of {bytes} bytes");
            }
            let replies = b.replicator.receive(peer(1), message, &mut b.log).unwrap();
            to_a.extend(sends_to(&replies, peer(1)));
        }
    }
    assert_eq!(shared_heads(&b.log), shared_heads(&a.log), "B caught up without a tick");
    let per_batch = CATCH_UP_BATCH_BYTES_MAX.div_ceil(event_size);
    assert_eq!(batches, vec![per_batch, per_batch, per_batch, 3_000 - 3 * per_batch]);
}

// Goal: pushes that overtake the answer to a gap do not each ask again (and so each make the
// sender read and send the same events again); the next summary round asks anew.
#[test]
fn a_gap_is_asked_about_once_until_the_heads_move() {
    let (mut a, mut b) = (node(1), node(2));
    let written = write(&mut a, 4, 10);
    let push = |index: usize| Message::Events { events: vec![written[index].clone()] };
    // The push of the first event was lost: each later one finds a gap.
    let first_gap = b.replicator.receive(peer(1), push(1), &mut b.log).unwrap();
    assert_eq!(sends_to(&first_gap, peer(1)).len(), 1, "the first gap asks");
    let second_gap = b.replicator.receive(peer(1), push(2), &mut b.log).unwrap();
    assert!(second_gap.is_empty(), "the same gap asks once: {second_gap:?}");
    // The answer fills the hole; a new gap from the new heads asks again.
    let answer = Message::Events { events: written[..2].to_vec() };
    b.replicator.receive(peer(1), answer, &mut b.log).unwrap();
    let new_gap = b.replicator.receive(peer(1), push(3), &mut b.log).unwrap();
    assert_eq!(sends_to(&new_gap, peer(1)).len(), 1, "moved heads ask again");
    // A summary round forgets what was asked (the answer may have been lost).
    let summaries = b.replicator.tick(0, &b.log);
    assert_eq!(sends_to(&summaries, peer(1)).len(), 1);
    let after_tick = b.replicator.receive(peer(1), push(3), &mut b.log).unwrap();
    assert_eq!(sends_to(&after_tick, peer(1)).len(), 1, "asked again after a summary");
}

/// Delivers `a`'s one summary to `b` (peers 1 and 2), `b`'s answer to `a`, and the events
/// `a` answers with to `b`.
fn summary_round(a: &mut Node, b: &mut Node, from_a: &[Output]) {
    let [Output::Send { to, message }] = from_a else { panic!("one summary: {from_a:?}") };
    assert_eq!(*to, peer(2));
    let asks = b.replicator.receive(peer(1), message.clone(), &mut b.log).unwrap();
    let [ask] = sends_to(&asks, peer(1)).try_into().unwrap();
    let events = a.replicator.receive(peer(2), ask, &mut a.log).unwrap();
    for message in sends_to(&events, peer(2)) {
        b.replicator.receive(peer(1), message, &mut b.log).unwrap();
    }
}

// Goal: a transport that dropped pushes to a peer gets it caught up in one round trip, without
// waiting for the summary tick; strangers get nothing.
#[test]
fn resync_catches_a_peer_up_at_once() {
    let (mut a, mut b) = (node(1), node(2));
    write(&mut a, 5, 10); // pushes all lost
    let resync = a.replicator.resync(peer(2), &a.log);
    summary_round(&mut a, &mut b, &resync);
    assert_eq!(shared_heads(&b.log), shared_heads(&a.log));
    assert!(a.replicator.resync(peer(9), &a.log).is_empty(), "not a peer");
}

// Goal: a peer whose link comes up gets this peer's summary at once, which starts the catch-up
// either way without a summary tick; peers already linked get nothing more.
#[test]
fn a_newcomer_gets_a_summary_at_once_and_catches_up() {
    let (mut a, mut b) = (node(1), node(2));
    a.replicator = Replicator::new(peer(1), []);
    write(&mut a, 5, 10); // b was away
    let hello = a.replicator.set_peers([peer(2)], &a.log);
    summary_round(&mut a, &mut b, &hello);
    assert_eq!(shared_heads(&b.log), shared_heads(&a.log));
    assert!(a.replicator.set_peers([peer(2), peer(1)], &a.log).is_empty(), "no newcomer");
    let again = a.replicator.set_peers([peer(3), peer(2)], &a.log);
    assert_eq!(sends_to(&again, peer(3)).len(), 1, "only the newcomer");
    assert_eq!(again.len(), 1);
}

// Goal: a group commit's events are pushed in as few messages as the batch limits allow, in
// chain order, and the receiver stores them all from those pushes alone.
#[test]
fn a_groups_events_are_pushed_together_within_the_batch_limits() {
    let (mut a, mut b) = (node(1), node(2));
    let small = write(&mut a, 3, 100);
    let pushed = sends_to(&a.replicator.appended(&small), peer(2));
    assert_eq!(pushed, vec![Message::Events { events: small.clone() }]);
    b.replicator.receive(peer(1), pushed[0].clone(), &mut b.log).unwrap();

    let large = write(&mut a, 2_500, 1_000);
    let pushes = sends_to(&a.replicator.appended(&large), peer(2));
    assert!(pushes.len() > 1, "2.5 MB went as {} message(s)", pushes.len());
    let mut in_order = small;
    for push in pushes {
        let Message::Events { events } = &push else { panic!("{push:?}") };
        // Full batches are cut at the first event that reaches the limit, as catch-up's are.
        let bytes: usize = events.iter().map(event_bytes).sum();
        let last_bytes = event_bytes(events.last().unwrap());
        assert!(bytes - last_bytes < CATCH_UP_BATCH_BYTES_MAX, "{bytes} bytes in one push");
        in_order.extend(events.iter().cloned());
        b.replicator.receive(peer(1), push, &mut b.log).unwrap();
    }
    assert_eq!(in_order.len(), 2_503);
    assert_eq!(shared_heads(&b.log), shared_heads(&a.log));
}

/// Delivers messages between `a` (peer 1) and `b` (peer 2), in order, until none is left;
/// returns the first sequence number of each batch of events `a` sent `b`.
fn exchange(a: &mut Node, b: &mut Node, in_flight: Vec<(PeerId, Message)>) -> Vec<u64> {
    let mut in_flight = std::collections::VecDeque::from(in_flight);
    let mut batches_to_b = Vec::new();
    while let Some((to, message)) = in_flight.pop_front() {
        if let (true, Message::Events { events }) = (to == peer(2), &message) {
            batches_to_b.push(events[0].seq);
        }
        let (node, from) = if to == peer(1) { (&mut *a, peer(2)) } else { (&mut *b, peer(1)) };
        let outputs = node.replicator.receive(from, message, &mut node.log).unwrap();
        in_flight.extend(sends_to(&outputs, from).into_iter().map(|message| (from, message)));
    }
    batches_to_b
}

fn addressed(to: PeerId, outputs: &[Output]) -> Vec<(PeerId, Message)> {
    sends_to(outputs, to).into_iter().map(|message| (to, message)).collect()
}

// Goal: two peers whose links come up greet each other at once; the one behind asks with its
// greeting and again in answer to the other's, and each batch of its catch-up is still read
// and sent once.
#[test]
fn greetings_both_ways_send_each_catch_up_batch_once() {
    let (mut a, mut b) = (node(1), node(2));
    (a.replicator, b.replicator) = (Replicator::new(peer(1), []), Replicator::new(peer(2), []));
    let written = write(&mut a, 3_000, 1_000);
    // Each greets the other before reading the other's greeting.
    let mut greetings = addressed(peer(1), &b.replicator.set_peers([peer(1)], &b.log));
    greetings.extend(addressed(peer(2), &a.replicator.set_peers([peer(2)], &a.log)));
    let batches = exchange(&mut a, &mut b, greetings);
    assert_eq!(shared_heads(&b.log), shared_heads(&a.log), "caught up");
    let per_batch = CATCH_UP_BATCH_BYTES_MAX.div_ceil(event_bytes(&written[0])) as u64;
    let firsts: Vec<u64> = (0..4).map(|batch| 1 + batch * per_batch).collect();
    assert_eq!(batches, firsts, "each batch sent once, in order");
}

/// How many messages `a` answers peer 2's `ask` with.
fn answers(a: &mut Node, ask: &Message) -> usize {
    let outputs = a.replicator.receive(peer(2), ask.clone(), &mut a.log).unwrap();
    sends_to(&outputs, peer(2)).len()
}

// Goal: an answer that may have been lost (no route yet, a full queue, a failed commit on the
// peer's side) is sent again for the same summary when it is asked a third time, and after a
// resync, a summary tick or a new link, so the peer behind still catches up.
#[test]
fn the_same_summary_is_answered_again_when_asked_thrice_or_after_a_resync_a_tick_or_a_new_link() {
    let (mut a, b) = (node(1), node(2));
    write(&mut a, 5, 10);
    let ask = Message::Summary { heads: shared_heads(&b.log) };
    assert_eq!(answers(&mut a, &ask), 1, "answered");
    assert_eq!(answers(&mut a, &ask), 0, "the same heads asked again are passed over once");
    // A third ask: the answer was lost on the way or on the peer's side (a failed commit).
    assert_eq!(answers(&mut a, &ask), 1, "answered again when asked a third time");
    a.replicator.resync(peer(2), &a.log);
    assert_eq!(answers(&mut a, &ask), 1, "answered again after a resync");
    a.replicator.tick(0, &a.log);
    assert_eq!(answers(&mut a, &ask), 1, "answered again after a tick");
    // Its link drops (no peer left), then comes up again.
    a.replicator.set_peers(std::iter::empty(), &a.log);
    a.replicator.set_peers([peer(2)], &a.log);
    assert_eq!(answers(&mut a, &ask), 1, "answered again after a new link");
}
