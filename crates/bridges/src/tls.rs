//! How an `https` bridge's certificate is checked: against the operator's trusted CAs with the
//! bridge's address as the name, or, for a bridge with a pinned SHA-256 fingerprint, by that
//! fingerprint alone (bridges ship self-signed certificates). Either way the fingerprint the
//! bridge presented is recorded, accepted or not, so the operator can compare it and pin it.
//! Handshake signatures are always verified by the TLS library.

use crate::error::TlsProblem;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex, PoisonError};

/// SHA-256 of a DER certificate as upper-case hex pairs joined by colons, as browsers show it
/// (and as a bridge's `pinned_sha256` is read, see `model::validate::sha256_fingerprint`).
pub fn fingerprint(certificate_der: &[u8]) -> String {
    fingerprint_text(&Sha256::digest(certificate_der).into())
}

pub(crate) fn fingerprint_text(digest: &[u8; 32]) -> String {
    digest.iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}

/// The refusal of a certificate that is not the pinned one, carried through the TLS library
/// as its "other" certificate error and read back by [`TlsProblem::of`].
#[derive(Debug, thiserror::Error)]
#[error("fingerprint mismatch: the bridge presented {presented}")]
pub(crate) struct PinMismatch {
    pub(crate) presented: String,
}

/// The operator's trusted CAs, parsed once per client.
pub(crate) type Roots = Option<Arc<rustls::RootCertStore>>;

/// Parses PEM CA certificates into a root store; an error says what is wrong with them.
pub(crate) fn roots_from_pem(pem: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let certificate = certificate.map_err(|error| format!("bad CA certificates: {error}"))?;
        roots.add(certificate).map_err(|error| format!("bad CA certificate: {error}"))?;
    }
    if roots.is_empty() {
        return Err("no CA certificate in the PEM".to_owned());
    }
    Ok(roots)
}

/// The verifier of one bridge: pinned, or the CAs' (none given: every issuer is unknown).
#[derive(Debug)]
struct BridgeVerifier {
    pinned: Option<[u8; 32]>,
    by_ca: Option<Arc<WebPkiServerVerifier>>,
    /// The fingerprint of the certificate the bridge presented last.
    presented: Arc<Mutex<Option<String>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for BridgeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity).into();
        let presented = fingerprint_text(&digest);
        *self.presented.lock().unwrap_or_else(PoisonError::into_inner) = Some(presented.clone());
        match (&self.pinned, &self.by_ca) {
            (Some(pinned), _) if *pinned == digest => Ok(ServerCertVerified::assertion()),
            (Some(_), _) => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch { presented })),
            ))),
            (None, Some(by_ca)) => {
                by_ca.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            (None, None) => Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS configuration for one bridge; what it presents is written to `presented`.
pub(crate) fn client_config(
    roots: &Roots,
    pinned: Option<[u8; 32]>,
    presented: Arc<Mutex<Option<String>>>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let by_ca = match roots {
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|error| format!("the trusted CAs: {error}"))?,
        ),
        None => None,
    };
    let verifier = BridgeVerifier { pinned, by_ca, presented, provider: provider.clone() };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The problem behind a refused certificate the TLS library reports as "other": ours.
pub(crate) fn other_problem(other: &OtherError) -> TlsProblem {
    match other.0.downcast_ref::<PinMismatch>() {
        Some(mismatch) => TlsProblem::FingerprintMismatch { presented: mismatch.presented.clone() },
        None => TlsProblem::Other(other.to_string()),
    }
}
