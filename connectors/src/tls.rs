//! TLS client configuration shared by the HTTP and syslog connectors (e-mail goes
//! through lettre's own parameters, built from the same CA file). Always rustls with
//! ring: one crypto backend in the build, no C toolchain for aws-lc.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::bounded::read_limited;
use crate::{Config, ConnectorError};

/// A CA bundle is a few hundred KiB at most (the whole Mozilla set is ~250 KiB).
const MAX_CA_FILE: u64 = 4 * 1024 * 1024;

/// Reads the configured CA file (bounded) and returns its PEM bytes and certificates.
pub(crate) fn read_ca_file(path: &str) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), ConnectorError> {
    let f = std::fs::File::open(path).map_err(|e| ConnectorError::invalid("ca_file", format!("{path}: {e}")))?;
    let pem = read_limited(f, MAX_CA_FILE).map_err(|e| ConnectorError::invalid("ca_file", format!("{path}: {e}")))?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(ConnectorError::invalid("ca_file", format!("{path} is larger than {MAX_CA_FILE} bytes")));
    }
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectorError::invalid("ca_file", format!("{path} is not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(ConnectorError::invalid("ca_file", format!("{path} has no PEM certificates")));
    }
    Ok((pem, certs))
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration for a connector: its CA file's roots, or the public
/// (webpki) roots; verification off only when `skip_tls_verify` says so.
pub(crate) fn client_config(config: &Config, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, ConnectorError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectorError::Io(format!("TLS: {e}")))?;
    let mut cfg = if config.skip_tls_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider.signature_verification_algorithms)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match &config.ca_file {
            Some(path) => {
                for cert in read_ca_file(path)?.1 {
                    roots.add(cert).map_err(|e| ConnectorError::invalid("ca_file", format!("{path}: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The name to verify and send as SNI: a DNS name, or an IP address literal.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|e| format!("{host} is not a valid TLS server name: {e}"))
}

/// `skip_tls_verify`: accepts any certificate, but still checks the handshake
/// signatures so the session is at least with the holder of the presented key.
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
