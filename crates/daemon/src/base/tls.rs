//! The admin API's TLS identity. On first start Baton makes a private CA and a server
//! certificate signed by it (the CA's key is discarded at once, so it can sign nothing else);
//! clients trust `ca.pem`. Both files are replaceable by the operator.

use crate::base::durable;
use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;

pub const CA_FILE: &str = "ca.pem";
pub const CERTIFICATE_FILE: &str = "server.pem";
pub const KEY_FILE: &str = "server-key.pem";

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub dir: PathBuf,
}

impl TlsFiles {
    pub fn ca(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }
    pub fn certificate(&self) -> PathBuf {
        self.dir.join(CERTIFICATE_FILE)
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }
}

/// Makes the CA and server certificate unless a usable pair of certificate and key is stored.
/// Returns whether new files were made.
///
/// Each file is replaced durably and the certificate last, so a power cut while they are made
/// leaves no certificate and the next start makes them again. A stored pair that does not load
/// (an empty certificate is what an earlier version, which did not sync it, left after a power
/// cut) is replaced too: without it the admin API cannot start, and the operator could only
/// reach the appliance's console.
pub fn ensure_identity(files: &TlsFiles, names: &[String]) -> anyhow::Result<bool> {
    if files.certificate().exists() || files.key().exists() {
        match server_config(files) {
            Ok(_) => return Ok(false),
            Err(error) => tracing::warn!(
                error = %format!("{error:#}"),
                "the stored TLS identity does not load; making a new one (clients must trust the new ca.pem)"
            ),
        }
    }
    std::fs::create_dir_all(&files.dir)
        .with_context(|| format!("creating {}", files.dir.display()))?;

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "Baton appliance CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).context("signing the CA certificate")?;

    let server_key = KeyPair::generate().context("generating the server key")?;
    let mut server_params =
        CertificateParams::new(names.to_vec()).context("server certificate names")?;
    server_params.distinguished_name.push(DnType::CommonName, "Baton admin API");
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .context("signing the server certificate")?;

    let _ = std::fs::remove_file(files.certificate());
    durable::write(&files.ca(), ca.pem().as_bytes()).context("writing the CA certificate")?;
    durable::write_private(&files.key(), server_key.serialize_pem().as_bytes())
        .context("writing the server key")?;
    durable::write(&files.certificate(), server.pem().as_bytes())
        .context("writing the server certificate")?;
    Ok(true)
}

/// The admin API's TLS configuration from the identity files made on first start.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certificate = std::fs::read_to_string(files.certificate())
        .with_context(|| format!("reading {}", files.certificate().display()))?;
    let key = std::fs::read_to_string(files.key())
        .with_context(|| format!("reading {}", files.key().display()))?;
    server_config_from_pem(&certificate, &key)
}

/// The TLS configuration for a PEM certificate chain and private key; fails if they do not
/// parse or do not belong together.
pub fn server_config_from_pem(
    certificate_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("the certificate is not PEM")?;
    anyhow::ensure!(!certificates.is_empty(), "no certificate found in the PEM text");
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("the private key is not PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .context("the certificate and the private key do not belong together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The identity the admin API should present: the operator's certificate from the
/// `certificates` record when it has one, else the one made on first start.
pub fn configured_identity(
    files: &TlsFiles,
    certificates: Option<&model::record::Certificates>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    match certificates {
        Some(c) if !c.server_certificate_pem.is_empty() => {
            server_config_from_pem(&c.server_certificate_pem, &c.server_private_key_pem)
        }
        _ => server_config(files),
    }
}

/// The SHA-256 fingerprint (`AB:CD:…`) of the certificate the admin listener presents: the
/// `certificates` record's when it loads (as [`configured_identity`] chooses), else the one
/// made on first start. Operators compare it when another peer or a browser first connects.
pub fn presented_fingerprint(
    files: &TlsFiles,
    certificates: Option<&model::record::Certificates>,
) -> anyhow::Result<String> {
    Ok(fingerprint(&presented_certificate(files, certificates)?))
}

/// The DER of the (leaf) certificate the admin listener presents, chosen as
/// [`presented_fingerprint`] says.
pub fn presented_certificate(
    files: &TlsFiles,
    certificates: Option<&model::record::Certificates>,
) -> anyhow::Result<CertificateDer<'static>> {
    let pem = match certificates {
        Some(c)
            if !c.server_certificate_pem.is_empty()
                && server_config_from_pem(&c.server_certificate_pem, &c.server_private_key_pem)
                    .is_ok() =>
        {
            c.server_certificate_pem.clone()
        }
        _ => std::fs::read_to_string(files.certificate())
            .with_context(|| format!("reading {}", files.certificate().display()))?,
    };
    let first = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .context("no certificate in the PEM text")?
        .context("the certificate is not PEM")?;
    Ok(first)
}

/// When a DER certificate stops being valid (its notAfter), in ms since the Unix epoch (0 for
/// a date before it).
pub fn not_after_ms(certificate_der: &[u8]) -> anyhow::Result<u64> {
    let (_, certificate) = x509_parser::parse_x509_certificate(certificate_der)
        .map_err(|error| anyhow::anyhow!("the certificate does not parse: {error}"))?;
    let not_after_s = certificate.validity().not_after.timestamp();
    Ok(u64::try_from(not_after_s).unwrap_or(0).saturating_mul(1000))
}

/// SHA-256 of a DER certificate as upper-case hex pairs joined by colons, as browsers show it.
pub fn fingerprint(certificate_der: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(certificate_der);
    digest.iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}

/// The admin listener's live TLS configuration: swapped for new connections when the
/// certificates change, without a restart.
#[derive(Clone)]
pub struct LiveTls(axum_server::tls_rustls::RustlsConfig);

impl LiveTls {
    pub fn new(config: Arc<rustls::ServerConfig>) -> LiveTls {
        LiveTls(axum_server::tls_rustls::RustlsConfig::from_config(config))
    }

    /// New connections use `config` from now on.
    pub fn reload(&self, config: Arc<rustls::ServerConfig>) {
        self.0.reload_from_config(config);
    }

    /// What the listener serves with.
    pub fn listener_config(&self) -> axum_server::tls_rustls::RustlsConfig {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::{TlsFiles, ensure_identity, server_config};
    use std::os::unix::fs::PermissionsExt;

    fn names() -> Vec<String> {
        vec!["localhost".to_owned()]
    }

    #[test]
    fn a_usable_identity_is_kept_across_starts() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = TlsFiles { dir: dir.path().join("tls") };
        assert!(ensure_identity(&files, &names()).expect("first start"));
        let ca = std::fs::read(files.ca()).expect("the CA");
        assert!(!ensure_identity(&files, &names()).expect("second start"));
        assert_eq!(std::fs::read(files.ca()).expect("the CA"), ca, "clients' trust kept");
        let mode = std::fs::metadata(files.key()).expect("the key").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the server key is readable by others: {mode:o}");
    }

    /// What the power-cut VM test found: the certificate written on first start but never
    /// synced was empty after the cut, and the daemon then failed at every start.
    #[test]
    fn an_identity_a_power_cut_left_empty_is_made_again() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = TlsFiles { dir: dir.path().join("tls") };
        ensure_identity(&files, &names()).expect("first start");
        std::fs::write(files.certificate(), "").expect("emptying the certificate");
        assert!(server_config(&files).is_err());
        assert!(ensure_identity(&files, &names()).expect("the next start"));
        server_config(&files).expect("the new identity loads");
    }

    #[test]
    fn a_key_without_its_certificate_is_made_again() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = TlsFiles { dir: dir.path().join("tls") };
        ensure_identity(&files, &names()).expect("first start");
        std::fs::remove_file(files.certificate()).expect("removing the certificate");
        assert!(ensure_identity(&files, &names()).expect("the next start"));
        server_config(&files).expect("the new identity loads");
    }
}
