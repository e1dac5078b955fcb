//! The encrypted channel: a plaintext preamble naming the protocol, a two-message Noise
//! handshake, then length-prefixed Noise transport frames carrying whole messages.
//!
//! Wire: every frame is a big-endian `u16` length and that many bytes. A message is split into
//! frames of at most [`FRAME_PLAINTEXT_MAX`] bytes; the first frame's plaintext starts with the
//! message's length as a big-endian `u32`.

use crate::ClusterKey;
use snow::{Builder, HandshakeState, StatelessTransportState};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

/// The Noise protocol. NN: no long-term keys, only the cluster's pre-shared key (psk0).
pub const NOISE_PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Sent first by the connecting side. Changes only when the channel's wire format changes, so
/// peers of different software versions still handshake and can report the mismatch.
pub const PREAMBLE: &[u8; 8] = b"BATONc1\n";
/// Noise limits a transport message to 65535 bytes including its 16-byte tag.
pub const FRAME_BYTES_MAX: usize = 65_535;
const TAG_BYTES: usize = 16;
pub const FRAME_PLAINTEXT_MAX: usize = FRAME_BYTES_MAX - TAG_BYTES;
/// Largest message accepted; a claim of more is refused before anything is buffered.
pub const MESSAGE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// A handshake that has not finished by then is abandoned (slow-loris protection).
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// What the answering side sends, in clear, when the first handshake message does not
/// decrypt: the only thing a peer with the wrong key ever learns.
const KEY_REFUSED: &[u8] = b"KEY?";

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("authentication failed: the peers' pre-shared keys differ")]
    AuthenticationFailed,
    #[error("not a Baton cluster peer (unexpected preamble)")]
    NotAPeer,
    #[error("the handshake did not finish within {HANDSHAKE_TIMEOUT_MS} ms")]
    HandshakeTimeout,
    #[error("a frame failed authentication: the connection was tampered with")]
    Tampered,
    #[error("message of {size_bytes} bytes exceeds the limit of {MESSAGE_BYTES_MAX}")]
    TooLarge { size_bytes: usize },
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
}

/// An established channel, before it is split for concurrent sending and receiving.
pub struct Channel<S> {
    stream: S,
    transport: StatelessTransportState,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// The connecting side: preamble, then `-> psk, e`, `<- e, ee`.
    pub async fn connect(mut stream: S, key: &ClusterKey) -> Result<Channel<S>, ChannelError> {
        with_timeout(async move {
            let mut noise = builder(key)?.build_initiator()?;
            stream.write_all(PREAMBLE).await?;
            let mut buffer = vec![0u8; FRAME_BYTES_MAX];
            let length = noise.write_message(&[], &mut buffer)?;
            write_frame(&mut stream, &buffer[..length]).await?;
            let answer = read_frame(&mut stream).await?;
            if answer == KEY_REFUSED {
                return Err(ChannelError::AuthenticationFailed);
            }
            noise
                .read_message(&answer, &mut buffer)
                .map_err(|_| ChannelError::AuthenticationFailed)?;
            finish(stream, noise)
        })
        .await
    }

    /// The answering side.
    pub async fn accept(mut stream: S, key: &ClusterKey) -> Result<Channel<S>, ChannelError> {
        with_timeout(async move {
            let mut preamble = [0u8; PREAMBLE.len()];
            stream.read_exact(&mut preamble).await?;
            if &preamble != PREAMBLE {
                return Err(ChannelError::NotAPeer);
            }
            let mut noise = builder(key)?.build_responder()?;
            let first = read_frame(&mut stream).await?;
            let mut buffer = vec![0u8; FRAME_BYTES_MAX];
            if noise.read_message(&first, &mut buffer).is_err() {
                // Best effort: the other side may already be gone.
                let _ = write_frame(&mut stream, KEY_REFUSED).await;
                return Err(ChannelError::AuthenticationFailed);
            }
            let length = noise.write_message(&[], &mut buffer)?;
            write_frame(&mut stream, &buffer[..length]).await?;
            finish(stream, noise)
        })
        .await
    }

    /// Splits the channel so one task can send while another receives.
    pub fn split(self) -> (Sender<S>, Receiver<S>) {
        let (read, write) = tokio::io::split(self.stream);
        let transport = Arc::new(self.transport);
        (
            Sender { write, transport: transport.clone(), nonce: 0 },
            Receiver { read, transport, nonce: 0 },
        )
    }
}

pub struct Sender<S> {
    write: WriteHalf<S>,
    transport: Arc<StatelessTransportState>,
    nonce: u64,
}

impl<S: AsyncRead + AsyncWrite> Sender<S> {
    pub async fn send(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        if message.len() > MESSAGE_BYTES_MAX {
            return Err(ChannelError::TooLarge { size_bytes: message.len() });
        }
        let mut plaintext = Vec::with_capacity(4 + message.len());
        plaintext.extend_from_slice(&(message.len() as u32).to_be_bytes());
        plaintext.extend_from_slice(message);
        let mut frame = vec![0u8; FRAME_BYTES_MAX];
        for chunk in plaintext.chunks(FRAME_PLAINTEXT_MAX) {
            let length = self.transport.write_message(self.nonce, chunk, &mut frame)?;
            self.nonce += 1;
            write_frame(&mut self.write, &frame[..length]).await?;
        }
        self.write.flush().await?;
        Ok(())
    }
}

pub struct Receiver<S> {
    read: ReadHalf<S>,
    transport: Arc<StatelessTransportState>,
    nonce: u64,
}

impl<S: AsyncRead + AsyncWrite> Receiver<S> {
    /// The next whole message. Not cancel-safe: run it in a task of its own.
    pub async fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        let first = self.next_plaintext().await?;
        let Some((length, rest)) = first.split_first_chunk::<4>() else {
            return Err(ChannelError::Malformed("first frame shorter than its length prefix"));
        };
        let length = u32::from_be_bytes(*length) as usize;
        if length > MESSAGE_BYTES_MAX {
            return Err(ChannelError::TooLarge { size_bytes: length });
        }
        let mut message = Vec::with_capacity(length);
        message.extend_from_slice(rest);
        while message.len() < length {
            message.extend_from_slice(&self.next_plaintext().await?);
        }
        if message.len() != length {
            return Err(ChannelError::Malformed("message longer than announced"));
        }
        Ok(message)
    }

    async fn next_plaintext(&mut self) -> Result<Vec<u8>, ChannelError> {
        let frame = read_frame(&mut self.read).await?;
        let mut plaintext = vec![0u8; frame.len()];
        let length = self
            .transport
            .read_message(self.nonce, &frame, &mut plaintext)
            .map_err(|_| ChannelError::Tampered)?;
        self.nonce += 1;
        plaintext.truncate(length);
        Ok(plaintext)
    }
}

fn builder(key: &ClusterKey) -> Result<Builder<'_>, ChannelError> {
    let params = NOISE_PATTERN.parse().map_err(ChannelError::Noise)?;
    Ok(Builder::new(params).psk(0, &key.0)?)
}

fn finish<S>(stream: S, noise: HandshakeState) -> Result<Channel<S>, ChannelError> {
    Ok(Channel { stream, transport: noise.into_stateless_transport_mode()? })
}

async fn with_timeout<T>(
    work: impl Future<Output = Result<T, ChannelError>>,
) -> Result<T, ChannelError> {
    tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), work)
        .await
        .map_err(|_| ChannelError::HandshakeTimeout)?
}

async fn write_frame(
    stream: &mut (impl AsyncWrite + Unpin),
    frame: &[u8],
) -> Result<(), ChannelError> {
    let length =
        u16::try_from(frame.len()).map_err(|_| ChannelError::Malformed("frame too long"))?;
    stream.write_all(&length.to_be_bytes()).await?;
    stream.write_all(frame).await?;
    Ok(())
}

async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, ChannelError> {
    let mut length = [0u8; 2];
    match stream.read_exact(&mut length).await {
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ChannelError::Closed);
        }
        other => other?,
    };
    let mut frame = vec![0u8; u16::from_be_bytes(length) as usize];
    stream.read_exact(&mut frame).await.map_err(|error| match error.kind() {
        std::io::ErrorKind::UnexpectedEof => ChannelError::Closed,
        _ => ChannelError::Io(error),
    })?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    async fn pair(
        connect_key: &ClusterKey,
        accept_key: &ClusterKey,
    ) -> (Result<Channel<DuplexStream>, ChannelError>, Result<Channel<DuplexStream>, ChannelError>)
    {
        let (a, b) = tokio::io::duplex(1 << 20);
        tokio::join!(Channel::connect(a, connect_key), Channel::accept(b, accept_key))
    }

    #[tokio::test]
    async fn messages_of_any_size_cross_in_both_directions() {
        let key = ClusterKey::derive("same").expect("valid parameters");
        let (a, b) = pair(&key, &key).await;
        let (mut a_send, mut a_recv) = a.expect("connect").split();
        let (mut b_send, mut b_recv) = b.expect("accept").split();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for message in [&b""[..], b"hello", &big] {
            a_send.send(message).await.expect("send");
            assert_eq!(b_recv.recv().await.expect("recv"), message);
            b_send.send(message).await.expect("send back");
            assert_eq!(a_recv.recv().await.expect("recv back"), message);
        }
    }

    #[tokio::test]
    async fn a_wrong_key_fails_on_both_sides() {
        let (a, b) = pair(
            &ClusterKey::derive("one").expect("valid parameters"),
            &ClusterKey::derive("two").expect("valid parameters"),
        )
        .await;
        assert!(matches!(a, Err(ChannelError::AuthenticationFailed)), "{:?}", a.err());
        assert!(matches!(b, Err(ChannelError::AuthenticationFailed)), "{:?}", b.err());
    }

    #[tokio::test]
    async fn a_stranger_is_refused_before_any_cryptography() {
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
        let accepted =
            Channel::accept(b, &ClusterKey::derive("k").expect("valid parameters")).await;
        assert!(matches!(accepted, Err(ChannelError::NotAPeer)));
    }

    /// Records two messages' raw frames from a real sender, lets `edit` change them, and feeds
    /// them to a receiver with the same session keys.
    async fn receive_edited(edit: impl Fn(&mut Vec<Vec<u8>>)) -> Result<Vec<u8>, ChannelError> {
        let key = ClusterKey::derive("same").expect("valid parameters");
        let (a, b) = tokio::io::duplex(1 << 20);
        let (a, b) = tokio::join!(Channel::connect(a, &key), Channel::accept(b, &key));
        let (mut sender, _) = a.expect("connect").split();
        let (_, mut receiver) = b.expect("accept").split();
        sender.send(b"first message").await.expect("send");
        sender.send(b"second message").await.expect("send");
        drop(sender);
        let mut frames = Vec::new();
        for _ in 0..2 {
            let frame = read_frame(&mut receiver.read).await.expect("raw frame");
            frames.push(frame);
        }
        edit(&mut frames);
        let (mut inject, read) = tokio::io::duplex(1 << 20);
        for frame in &frames {
            write_frame(&mut inject, frame).await.expect("inject");
        }
        drop(inject);
        let (read, _) = tokio::io::split(read);
        let mut replay = Receiver { read, transport: receiver.transport.clone(), nonce: 0 };
        let first = replay.recv().await?;
        assert_eq!(first, b"first message");
        replay.recv().await
    }

    #[tokio::test]
    async fn tampering_replay_reordering_and_truncation_are_detected() {
        assert_eq!(receive_edited(|_| {}).await.expect("untouched"), b"second message");
        let flipped = receive_edited(|frames| frames[1][3] ^= 1).await;
        assert!(matches!(flipped, Err(ChannelError::Tampered)), "{flipped:?}");
        let replayed = receive_edited(|frames| frames[1] = frames[0].clone()).await;
        assert!(matches!(replayed, Err(ChannelError::Tampered)), "{replayed:?}");
        let truncated = receive_edited(|frames| frames.truncate(1)).await;
        assert!(matches!(truncated, Err(ChannelError::Closed)), "{truncated:?}");
    }
}
