//! How `batond` takes the signals it is sent, whoever started it.

use baton_tests::Batond;
use nix::sys::signal::{SigSet, Signal};

// Goal: a daemon whose parent blocked the stop signals (a supervisor that waits for them with
// `sigwait`, as our own benches once did) still stops cleanly on SIGTERM. A blocked mask is
// inherited by the threads a thread starts and survives `exec`; before batond cleared it,
// this daemon took no notice of the SIGTERM and its benchmark waited for it for ever.
#[test]
fn a_daemon_started_with_the_stop_signals_blocked_still_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let daemon = std::thread::spawn(move || {
        let mut blocked = SigSet::empty();
        for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            blocked.add(signal);
        }
        // Only this thread's mask: the test process itself keeps its signals.
        blocked.thread_block().unwrap();
        Batond::start(&data_dir)
    })
    .join()
    .unwrap()
    .unwrap();
    let status = daemon.stop().expect("batond stops on SIGTERM");
    assert!(status.success(), "SIGTERM should stop batond cleanly, got {status}");
}
