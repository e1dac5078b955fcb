//! The cluster port: what an unauthenticated connection sends to a listening peer (preamble,
//! Noise handshake frames: `Channel::accept`), and the frames a peer decodes after it
//! (`Frame::decode`, the greeting check). A refusal or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peering::{Channel, ClusterKey, Frame};
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose peer sends the fuzz input, then closes; what we send is dropped.
struct Connection<'a> {
    input: &'a [u8],
}

impl AsyncRead for Connection<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let length = self.input.len().min(buf.remaining());
        buf.put_slice(&self.input[..length]);
        self.input = &self.input[length..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Connection<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn fixtures() -> &'static (tokio::runtime::Runtime, ClusterKey) {
    static FIXTURES: OnceLock<(tokio::runtime::Runtime, ClusterKey)> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
        (runtime, ClusterKey::derive("fuzz").expect("key"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let (runtime, key) = fixtures();
        let _ = runtime.block_on(Channel::accept(Connection { input: rest }, key));
        return;
    }
    if let Ok(Frame::Hello(theirs)) = Frame::decode(rest) {
        let _ = peering::check(&theirs, &theirs);
    }
});
