//! TLS towards the server for `SQL_SSLMODE`, with libpq's meanings: rustls on the ring provider
//! (not rustls' default, aws-lc-rs, whose build needs cmake and nasm), via tokio-postgres-rustls.
//! `prefer` and `require` check nothing about who the server is (libpq's `require` without a
//! root certificate: a passive listener learns nothing, an active one in the middle is not
//! stopped), but the handshake signatures are still verified, so the session keys belong to the
//! key of the certificate shown. `verify-full` checks the chain up to the configured root and
//! the host name against the certificate's subjectAltName.
//!
//! [`connect`] also learns whether the session ended up encrypted (for `prefer` that depends on
//! the server) and, for `prefer`, falls back to plain TCP when the TLS handshake fails, as
//! libpq does.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::SslMode;

type RustlsMake = MakeRustlsConnect;
type RustlsConnect = <RustlsMake as MakeTlsConnect<Socket>>::TlsConnect;
/// The stream of an encrypted session.
pub type TlsStream = <RustlsMake as MakeTlsConnect<Socket>>::Stream;

/// A new session: the client, the connection future that drives its socket, and whether TLS
/// protects it.
pub(crate) struct Connected {
    pub client: Client,
    pub connection: Connection<Socket, TlsStream>,
    pub encrypted: bool,
}

/// Why [`connect`] failed.
pub(crate) enum ConnectError {
    /// The TLS setup itself (the root certificate file): no connection was tried.
    Setup(String),
    Db(tokio_postgres::Error),
}

/// Connects with `config` (whose ssl_mode the caller set from `mode`) over TLS set up for `mode`.
pub(crate) async fn connect(config: &Config, mode: &SslMode) -> Result<Connected, ConnectError> {
    let tls = MakeTls::new(mode).map_err(ConnectError::Setup)?;
    let encrypted = Arc::clone(&tls.encrypted);
    match config.connect(tls).await {
        Ok((client, connection)) => Ok(Connected {
            client,
            connection,
            encrypted: encrypted.load(Ordering::Acquire),
        }),
        Err(e)
            if config.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer
                && is_handshake_error(&e) =>
        {
            // libpq's `prefer`: a server whose TLS we cannot speak is still used, in the clear.
            log::warn!("postgres: TLS handshake failed ({e}); sslmode=prefer, so trying without");
            let mut plain = config.clone();
            plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let tls = MakeTls::new(&SslMode::Disable).map_err(ConnectError::Setup)?;
            let (client, connection) = plain.connect(tls).await.map_err(ConnectError::Db)?;
            Ok(Connected {
                client,
                connection,
                encrypted: false,
            })
        }
        Err(e) => Err(ConnectError::Db(e)),
    }
}

/// Whether `e` is a failed TLS negotiation (tokio-postgres has no public error kind for it).
pub(crate) fn is_handshake_error(e: &tokio_postgres::Error) -> bool {
    e.to_string().starts_with("error performing TLS handshake")
}

/// Whether a failed TLS negotiation may go through on a later try: the connection was lost
/// during the handshake. A certificate the verifier rejects, a protocol the two sides do not
/// share, a server without TLS under `require`, or a host name that is not a valid TLS server
/// name will fail the same way again.
pub(crate) fn handshake_is_retriable(e: &tokio_postgres::Error) -> bool {
    let Some(io) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>()) else {
        // "server does not support TLS", "no hostname provided for TLS handshake".
        return false;
    };
    let from_rustls = io
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    !from_rustls && io.kind() != io::ErrorKind::InvalidInput
}

/// The connector: rustls set up for the mode, plus a flag raised when a handshake completes.
#[derive(Clone)]
struct MakeTls {
    inner: RustlsMake,
    encrypted: Arc<AtomicBool>,
}

impl MakeTls {
    fn new(mode: &SslMode) -> Result<MakeTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let config = match mode {
            SslMode::VerifyFull { root_cert } => builder
                .with_root_certificates(root_store(root_cert)?)
                .with_no_client_auth(),
            // Disable never starts a handshake; the connector is there for the types only.
            SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateCheck {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        };
        Ok(MakeTls {
            inner: MakeRustlsConnect::new(config),
            encrypted: Arc::default(),
        })
    }
}

/// The certificates of a PEM file, as trust anchors.
fn root_store(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("SQL_SSLROOTCERT {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "SQL_SSLROOTCERT {shown}: no PEM certificate (BEGIN CERTIFICATE) in it"
        ));
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "SQL_SSLROOTCERT {shown}: none of its {ignored} certificates could be parsed"
        ));
    }
    Ok(roots)
}

impl MakeTlsConnect<Socket> for MakeTls {
    type Stream = TlsStream;
    type TlsConnect = FlaggingConnect;
    type Error = <RustlsMake as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<FlaggingConnect, Self::Error> {
        // Called once per address tried: only the attempt that becomes the session counts.
        self.encrypted.store(false, Ordering::Release);
        Ok(FlaggingConnect {
            inner: MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, domain)?,
            encrypted: Arc::clone(&self.encrypted),
        })
    }
}

/// One handshake; raises the flag when it completes. tokio-postgres only starts one after the
/// server agreed to TLS, so the flag tells whether the session is encrypted.
struct FlaggingConnect {
    inner: RustlsConnect,
    encrypted: Arc<AtomicBool>,
}

impl TlsConnect<Socket> for FlaggingConnect {
    type Stream = TlsStream;
    type Error = <RustlsConnect as TlsConnect<Socket>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream, Self::Error>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let handshake = self.inner.connect(stream);
        let encrypted = self.encrypted;
        Box::pin(async move {
            let stream = handshake.await?;
            encrypted.store(true, Ordering::Release);
            Ok(stream)
        })
    }
}

/// `prefer` and `require`: any certificate chain and name are accepted, but the handshake
/// signatures are checked with the provider's algorithms as usual.
#[derive(Debug)]
struct NoCertificateCheck {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoCertificateCheck {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
