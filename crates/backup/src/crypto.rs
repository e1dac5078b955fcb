//! Password-based streaming encryption of an archive: argon2id turns the password into a key,
//! and AES-256-GCM in the STREAM construction (`aead::stream`, big-endian 32-bit counter)
//! seals fixed-size chunks, each authenticated with its index and a last-chunk flag, so
//! truncation, reordering and modification are all detected. Nothing here is hand-made
//! cryptography: we only frame what the `aead`, `aes-gcm` and `argon2` crates produce.
//!
//! Layout: header (below), then chunks of `CHUNK_SIZE_BYTES` plaintext + 16-byte tag. The last
//! chunk is always shorter than a full one (possibly just a tag), which is how a reader knows
//! it is the last without looking ahead. The whole header is the associated data of every
//! chunk, so changing any parameter in it fails authentication too.
//!
//! Header: magic `BATONENC` (8) · format version u16 · argon2id memory KiB u32 · iterations u32
//! · parallelism u32 · salt (16) · nonce prefix (7); integers big-endian.

use crate::Error;
use aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::{Aes256Gcm, KeyInit};
use std::io::{self, Read, Write};

pub(crate) const MAGIC: &[u8; 8] = b"BATONENC";
/// Version of the encrypted envelope this build writes and the highest it reads.
pub(crate) const ENCRYPTION_FORMAT_VERSION: u16 = 1;
/// Plaintext bytes per chunk: large enough that the 16-byte tag costs nothing, small enough
/// that a reader holds little in memory.
pub(crate) const CHUNK_SIZE_BYTES: usize = 64 * 1024;
const TAG_SIZE_BYTES: usize = 16;
const SALT_SIZE_BYTES: usize = 16;
/// STREAM uses the AEAD's 12-byte nonce as prefix (7) + counter (4) + last-chunk flag (1).
const NONCE_PREFIX_SIZE_BYTES: usize = 7;
const KEY_SIZE_BYTES: usize = 32;
pub(crate) const HEADER_SIZE_BYTES: usize =
    MAGIC.len() + 2 + 3 * 4 + SALT_SIZE_BYTES + NONCE_PREFIX_SIZE_BYTES;

/// argon2id cost parameters, stored in the header so they can be raised later.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// RFC 9106's second recommended option, with one lane (the appliance has few cores).
    pub const RECOMMENDED: KdfParams =
        KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 };
    /// Bounds accepted from a header, so a crafted file cannot make a restore allocate
    /// gigabytes or spin for minutes before failing.
    pub const MEMORY_KIB_MAX: u32 = 256 * 1024;
    pub const ITERATIONS_MAX: u32 = 16;
    pub const PARALLELISM_MAX: u32 = 8;

    fn check(&self) -> Result<argon2::Params, String> {
        if self.memory_kib > Self::MEMORY_KIB_MAX
            || self.iterations > Self::ITERATIONS_MAX
            || self.parallelism > Self::PARALLELISM_MAX
        {
            return Err(format!(
                "key-derivation parameters {self:?} are beyond the accepted bounds"
            ));
        }
        argon2::Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(KEY_SIZE_BYTES),
        )
        .map_err(|error| format!("key-derivation parameters {self:?}: {error}"))
    }
}

#[derive(Clone, Copy)]
struct Header {
    kdf: KdfParams,
    salt: [u8; SALT_SIZE_BYTES],
    nonce_prefix: [u8; NONCE_PREFIX_SIZE_BYTES],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_SIZE_BYTES] {
        let mut bytes = Vec::with_capacity(HEADER_SIZE_BYTES);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&ENCRYPTION_FORMAT_VERSION.to_be_bytes());
        bytes.extend_from_slice(&self.kdf.memory_kib.to_be_bytes());
        bytes.extend_from_slice(&self.kdf.iterations.to_be_bytes());
        bytes.extend_from_slice(&self.kdf.parallelism.to_be_bytes());
        bytes.extend_from_slice(&self.salt);
        bytes.extend_from_slice(&self.nonce_prefix);
        let mut header = [0; HEADER_SIZE_BYTES];
        header.copy_from_slice(&bytes);
        header
    }

    /// Parses a header whose magic has been checked by the caller.
    fn decode(bytes: &[u8; HEADER_SIZE_BYTES]) -> Result<Header, Error> {
        let mut rest: &[u8] = &bytes[MAGIC.len()..];
        let mut take = |length: usize| {
            let (field, tail) = rest.split_at(length);
            rest = tail;
            field.to_vec()
        };
        let u16_at = |field: Vec<u8>| u16::from_be_bytes([field[0], field[1]]);
        let u32_at = |field: Vec<u8>| u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
        let version = u16_at(take(2));
        if version != ENCRYPTION_FORMAT_VERSION {
            return Err(if version > ENCRYPTION_FORMAT_VERSION {
                Error::FormatTooNew {
                    found: u32::from(version),
                    supported: u32::from(ENCRYPTION_FORMAT_VERSION),
                }
            } else {
                Error::UnknownFormat { reason: format!("encryption version {version}") }
            });
        }
        let kdf = KdfParams {
            memory_kib: u32_at(take(4)),
            iterations: u32_at(take(4)),
            parallelism: u32_at(take(4)),
        };
        let mut salt = [0; SALT_SIZE_BYTES];
        salt.copy_from_slice(&take(SALT_SIZE_BYTES));
        let mut nonce_prefix = [0; NONCE_PREFIX_SIZE_BYTES];
        nonce_prefix.copy_from_slice(&take(NONCE_PREFIX_SIZE_BYTES));
        Ok(Header { kdf, salt, nonce_prefix })
    }

    fn cipher(&self, password: &str) -> Result<Aes256Gcm, Error> {
        let params = self.kdf.check().map_err(Error::Kdf)?;
        let argon2 =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; KEY_SIZE_BYTES];
        argon2
            .hash_password_into(password.as_bytes(), &self.salt, &mut key)
            .map_err(|error| Error::Kdf(error.to_string()))?;
        Aes256Gcm::new_from_slice(&key).map_err(|error| Error::Kdf(error.to_string()))
    }
}

/// Encrypts everything written to it into `inner`. Call [`EncryptingWriter::finish`]: without
/// the last chunk, a reader reports the output as truncated.
pub struct EncryptingWriter<W: Write> {
    inner: W,
    encryptor: EncryptorBE32<Aes256Gcm>,
    header: [u8; HEADER_SIZE_BYTES],
    /// Plaintext not yet sealed; always shorter than a chunk between calls.
    pending: Vec<u8>,
}

impl<W: Write> EncryptingWriter<W> {
    /// Writes the header (fresh random salt and nonce prefix) and returns the writer.
    pub fn new(mut inner: W, password: &str, kdf: KdfParams) -> Result<Self, Error> {
        let mut salt = [0; SALT_SIZE_BYTES];
        let mut nonce_prefix = [0; NONCE_PREFIX_SIZE_BYTES];
        getrandom::fill(&mut salt).map_err(|error| Error::Random(error.to_string()))?;
        getrandom::fill(&mut nonce_prefix).map_err(|error| Error::Random(error.to_string()))?;
        let header = Header { kdf, salt, nonce_prefix };
        let cipher = header.cipher(password)?;
        let header = header.encode();
        inner
            .write_all(&header)
            .map_err(crate::io_error(|| "writing the encryption header".to_owned()))?;
        Ok(EncryptingWriter {
            inner,
            encryptor: EncryptorBE32::from_aead(cipher, nonce_prefix.as_slice().into()),
            header,
            pending: Vec::with_capacity(CHUNK_SIZE_BYTES + TAG_SIZE_BYTES),
        })
    }

    /// Seals the last chunk, flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.encryptor
            .encrypt_last_in_place(&self.header, &mut self.pending)
            .map_err(|_| io::Error::other("encrypting the last chunk failed"))?;
        self.inner.write_all(&self.pending)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK_SIZE_BYTES - self.pending.len();
        let taken = room.min(buf.len());
        self.pending.extend_from_slice(&buf[..taken]);
        if self.pending.len() == CHUNK_SIZE_BYTES {
            self.encryptor
                .encrypt_next_in_place(&self.header, &mut self.pending)
                .map_err(|_| io::Error::other("too many chunks for one stream"))?;
            self.inner.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(taken)
    }

    /// Flushes what is sealed; the pending partial chunk stays until more data or `finish`.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why decryption stopped; carried inside the `io::Error`s a [`DecryptingReader`] returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub(crate) enum DecryptFailure {
    #[error("the first chunk failed authentication")]
    FirstChunk,
    #[error("chunk {0} failed authentication")]
    LaterChunk(u64),
    #[error("the encrypted stream ends before its last chunk")]
    Truncated,
}

impl From<DecryptFailure> for Error {
    fn from(failure: DecryptFailure) -> Error {
        match failure {
            DecryptFailure::FirstChunk => Error::WrongPasswordOrTampered,
            // The key opened the first chunk, so it is right: a later failure is damage.
            DecryptFailure::LaterChunk(index) => Error::Corrupt {
                reason: format!("encrypted chunk {index} failed authentication (modified or cut)"),
            },
            DecryptFailure::Truncated => Error::Truncated,
        }
    }
}

/// Decrypts what [`EncryptingWriter`] wrote. Yields only authenticated plaintext, and reports
/// the end of the stream only after the last chunk authenticated.
pub struct DecryptingReader<R: Read> {
    inner: R,
    decryptor: Option<DecryptorBE32<Aes256Gcm>>,
    header: [u8; HEADER_SIZE_BYTES],
    plaintext: Vec<u8>,
    plaintext_read: usize,
    chunk_index: u64,
    /// Set by the first failure and returned by every later read, so a caller that ignores an
    /// error can never see a clean end of stream after it.
    failure: Option<DecryptFailure>,
}

impl<R: Read> DecryptingReader<R> {
    /// Reads and checks the header and derives the key (slow by design: argon2id).
    pub fn new(mut inner: R, password: &str) -> Result<Self, Error> {
        let mut header = [0; HEADER_SIZE_BYTES];
        let length = read_full(&mut inner, &mut header)
            .map_err(crate::io_error(|| "reading the encryption header".to_owned()))?;
        if length < MAGIC.len() || &header[..MAGIC.len()] != MAGIC {
            return Err(Error::UnknownFormat { reason: "no encryption header".to_owned() });
        }
        if length < HEADER_SIZE_BYTES {
            return Err(Error::Truncated);
        }
        let parsed = Header::decode(&header)?;
        // Parameters out of bounds cannot come from us: the header was modified.
        let cipher = parsed.cipher(password).map_err(|error| match error {
            Error::Kdf(reason) => Error::Corrupt { reason },
            other => other,
        })?;
        Ok(DecryptingReader {
            inner,
            decryptor: Some(DecryptorBE32::from_aead(
                cipher,
                parsed.nonce_prefix.as_slice().into(),
            )),
            header,
            plaintext: Vec::with_capacity(CHUNK_SIZE_BYTES + TAG_SIZE_BYTES),
            plaintext_read: 0,
            chunk_index: 0,
            failure: None,
        })
    }

    /// Reads and opens the next chunk into `plaintext`, remembering a failure.
    fn next_chunk(&mut self) -> io::Result<()> {
        if let Some(failure) = self.failure {
            return Err(io::Error::other(failure));
        }
        let result = self.open_next_chunk();
        if let Err(error) = &result
            && let Some(failure) = error.get_ref().and_then(|inner| inner.downcast_ref())
        {
            self.failure = Some(*failure);
            self.plaintext.clear();
            self.plaintext_read = 0;
        }
        result
    }

    fn open_next_chunk(&mut self) -> io::Result<()> {
        let Some(decryptor) = self.decryptor.as_mut() else { return Ok(()) };
        let failure = |index: u64| {
            if index == 0 { DecryptFailure::FirstChunk } else { DecryptFailure::LaterChunk(index) }
        };
        self.plaintext.resize(CHUNK_SIZE_BYTES + TAG_SIZE_BYTES, 0);
        let length = read_full(&mut self.inner, &mut self.plaintext)?;
        self.plaintext.truncate(length);
        self.plaintext_read = 0;
        if length == CHUNK_SIZE_BYTES + TAG_SIZE_BYTES {
            decryptor
                .decrypt_next_in_place(&self.header, &mut self.plaintext)
                .map_err(|_| io::Error::other(failure(self.chunk_index)))?;
            self.chunk_index += 1;
        } else if length < TAG_SIZE_BYTES {
            // Every stream ends with a short chunk holding at least a tag.
            return Err(io::Error::other(DecryptFailure::Truncated));
        } else if let Some(decryptor) = self.decryptor.take() {
            decryptor
                .decrypt_last_in_place(&self.header, &mut self.plaintext)
                .map_err(|_| io::Error::other(failure(self.chunk_index)))?;
            self.chunk_index += 1;
        }
        Ok(())
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.plaintext_read == self.plaintext.len() {
            if self.decryptor.is_none() && self.failure.is_none() {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let available = &self.plaintext[self.plaintext_read..];
        let length = available.len().min(buf.len());
        buf[..length].copy_from_slice(&available[..length]);
        self.plaintext_read += length;
        Ok(length)
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(length) => filled += length,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}
