//! A blocking `Read` over a request body, for work that runs on the blocking pool (restores).

use axum::body::Bytes;
use futures_util::StreamExt as _;
use std::io::{self, Read};
use std::sync::Arc;

/// A blocking `Read` over a request body, for the restore running on the blocking pool; at
/// most `limit_bytes` are read.
pub struct BodyReader {
    runtime: tokio::runtime::Handle,
    stream: axum::body::BodyDataStream,
    current: Bytes,
    read_bytes: u64,
    limit_bytes: u64,
    /// Set when the body went over the limit, so the caller can answer 413.
    pub over_limit: Arc<std::sync::atomic::AtomicBool>,
}

impl BodyReader {
    pub fn new(runtime: tokio::runtime::Handle, body: axum::body::Body, limit_bytes: u64) -> Self {
        BodyReader {
            runtime,
            stream: body.into_data_stream(),
            current: Bytes::new(),
            read_bytes: 0,
            limit_bytes,
            over_limit: Arc::default(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.read_bytes += chunk.len() as u64;
                    if self.read_bytes > self.limit_bytes {
                        self.over_limit.store(true, std::sync::atomic::Ordering::SeqCst);
                        return Err(io::Error::other("the upload is larger than allowed"));
                    }
                    self.current = chunk;
                }
                Some(Err(error)) => return Err(io::Error::other(error)),
            }
        }
        let length = self.current.len().min(buf.len());
        buf[..length].copy_from_slice(&self.current[..length]);
        let _ = self.current.split_to(length);
        Ok(length)
    }
}
