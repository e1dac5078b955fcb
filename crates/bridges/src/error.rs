//! The one error type of the crate, and the fault codes of the bridges' APIs.

/// Why a bridge call failed: either the bridge answered with a fault (it is up and said no),
/// or it could not be reached or did not answer like a bridge ([`BridgeError::is_bridge_down`]).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum BridgeError {
    /// A fault without a more specific variant below.
    #[error("the bridge refused the call: fault {code}: {message}")]
    Fault { code: i32, message: String },
    /// Faults 14 (unauthorised) and 15 (insufficient privileges: bad user name or password).
    #[error("the bridge refused the credentials")]
    Unauthorised,
    /// Fault 2: a conference of that name already exists on the bridge.
    #[error("a conference of that name already exists on the bridge")]
    DuplicateName,
    /// Fault 6: the bridge hosts as many conferences as it can.
    #[error("the bridge has too many conferences")]
    TooManyConferences,
    /// Fault 4: no such conference on the bridge.
    #[error("no such conference on the bridge")]
    NoSuchConference,
    /// The bridge could not be reached, or answered with something other than HTTP 200.
    #[error("bridge unreachable: {0}")]
    Transport(String),
    /// The bridge's certificate was refused, and why (shown to the operator).
    #[error("the bridge's certificate was refused: {0}")]
    Tls(TlsProblem),
    /// No complete answer within the client's timeout.
    #[error("the bridge did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// The answer was not a well-formed XML-RPC response of the expected shape.
    #[error("malformed answer from the bridge: {0}")]
    Malformed(String),
    /// One answer was longer than [`crate::RESPONSE_BYTES_MAX`].
    #[error("the bridge answered more than {limit_bytes} bytes to one call")]
    AnswerTooLarge { limit_bytes: usize },
    /// An enumeration went on for more than [`crate::ENUMERATION_PAGES_MAX`] pages.
    #[error("{method}: the bridge kept answering after {pages_max} pages")]
    TooManyPages { method: String, pages_max: usize },
    /// One operation's answers together passed [`crate::OPERATION_RESPONSE_BYTES_MAX`].
    #[error("{method}: the bridge answered more than {limit_bytes} bytes in one operation")]
    OperationTooLarge { method: String, limit_bytes: usize },
}

/// Why a bridge's certificate was refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TlsProblem {
    /// Not signed by a CA in the operator's trusted CAs (the `certificates` record).
    #[error("unknown issuer (save the CA that signed it among the trusted CAs)")]
    UnknownIssuer,
    /// Valid, but for another name or address than the bridge's.
    #[error("name mismatch (the certificate is not for the bridge's address)")]
    NameMismatch,
    /// Out of its validity period.
    #[error("expired or not yet valid")]
    Expired,
    /// The bridge pins a certificate, and presented another one (named by its SHA-256
    /// fingerprint, so the operator can compare it with the bridge's own).
    #[error("fingerprint mismatch (the bridge presented {presented}, not the pinned certificate)")]
    FingerprintMismatch { presented: String },
    /// Any other refusal, as the TLS library words it.
    #[error("{0}")]
    Other(String),
}

impl TlsProblem {
    /// The problem behind a refused handshake, if `error` is one.
    pub fn of(error: &rustls::Error) -> Option<TlsProblem> {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(certificate) => Some(match certificate {
                C::UnknownIssuer | C::BadSignature => TlsProblem::UnknownIssuer,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsProblem::NameMismatch,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsProblem::Expired,
                C::Other(other) => crate::tls::other_problem(other),
                other => TlsProblem::Other(format!("{other:?}")),
            }),
            rustls::Error::AlertReceived(_) | rustls::Error::InvalidMessage(_) => None,
            other => Some(TlsProblem::Other(other.to_string())),
        }
    }
}

impl BridgeError {
    /// The error for a fault the bridge answered with, mapped to its specific variant if any.
    pub fn from_fault(code: i32, message: impl Into<String>) -> BridgeError {
        match code {
            fault::UNAUTHORISED | fault::INSUFFICIENT_PRIVILEGES => BridgeError::Unauthorised,
            fault::DUPLICATE_CONFERENCE_NAME => BridgeError::DuplicateName,
            fault::TOO_MANY_CONFERENCES => BridgeError::TooManyConferences,
            fault::NO_SUCH_CONFERENCE => BridgeError::NoSuchConference,
            code => BridgeError::Fault { code, message: message.into() },
        }
    }

    /// Whether the bridge itself is unusable (unreachable, too slow, or not speaking XML-RPC),
    /// as opposed to having refused this one call: take it out of selection until it recovers.
    pub fn is_bridge_down(&self) -> bool {
        // Every refusal is a fault the bridge answered with; everything else is a bridge down.
        self.fault_code().is_none()
    }

    /// The fault code behind a business error (for the specific variants, the canonical one).
    pub fn fault_code(&self) -> Option<i32> {
        match self {
            BridgeError::Fault { code, .. } => Some(*code),
            BridgeError::Unauthorised => Some(fault::INSUFFICIENT_PRIVILEGES),
            BridgeError::DuplicateName => Some(fault::DUPLICATE_CONFERENCE_NAME),
            BridgeError::TooManyConferences => Some(fault::TOO_MANY_CONFERENCES),
            BridgeError::NoSuchConference => Some(fault::NO_SUCH_CONFERENCE),
            BridgeError::Transport(_)
            | BridgeError::Tls(_)
            | BridgeError::Timeout { .. }
            | BridgeError::Malformed(_)
            | BridgeError::AnswerTooLarge { .. }
            | BridgeError::TooManyPages { .. }
            | BridgeError::OperationTooLarge { .. } => None,
        }
    }
}

/// Fault codes shared by the MCU and TelePresence Server APIs (see the remote management API
/// guides; 101–201 are the TelePresence Server's generic ones).
pub mod fault {
    pub const METHOD_NOT_SUPPORTED: i32 = 1;
    pub const DUPLICATE_CONFERENCE_NAME: i32 = 2;
    pub const DUPLICATE_PARTICIPANT_NAME: i32 = 3;
    pub const NO_SUCH_CONFERENCE: i32 = 4;
    pub const NO_SUCH_PARTICIPANT: i32 = 5;
    pub const TOO_MANY_CONFERENCES: i32 = 6;
    pub const TOO_MANY_PARTICIPANTS: i32 = 7;
    pub const NO_CONFERENCE_NAME: i32 = 8;
    pub const NO_PARTICIPANT_NAME: i32 = 9;
    pub const INVALID_PIN: i32 = 13;
    pub const UNAUTHORISED: i32 = 14;
    pub const INSUFFICIENT_PRIVILEGES: i32 = 15;
    pub const INVALID_ENUMERATE_ID: i32 = 16;
    pub const MISSING_PARAMETER: i32 = 101;
    pub const INVALID_PARAMETER: i32 = 102;
    pub const MALFORMED_PARAMETER: i32 = 103;
    pub const OPERATION_FAILED: i32 = 201;
}
