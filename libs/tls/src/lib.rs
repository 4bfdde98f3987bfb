//! TLS files for every ShopFDS connection that can be encrypted: certificate authorities and
//! certificate/key pairs named by configuration variables, read once at start and checked there.
//!
//! The contract, the same for the broker (`BROKER_TLS_*`), gRPC (`GRPC_TLS_*`, `FDS_GRPC_*`) and
//! PostgreSQL (`DATABASE_CA_FILE`):
//! - a variable that is unset (or empty) means "not configured": `None`;
//! - a file that cannot be read, holds no PEM certificate, or (for a key) no PEM private key is a
//!   [`ConfigError`] naming the variable, so a deployment with a bad file stops at start instead
//!   of failing its first handshake;
//! - a certificate and its key come together: one without the other, or a key that does not match
//!   the certificate, is an error naming the variable to fix;
//! - the key's bytes never appear in `Debug` output or in an error.
//!
//! Files are read at start; rotating a certificate means restarting the process (README, "TLS").
//!
//! Two rustls crypto providers are compiled into the workspace (ring through reqwest and lettre,
//! aws-lc-rs through sqlx and lapin), so rustls cannot pick one by itself; [`crypto_provider`]
//! installs the one this workspace uses everywhere it builds a configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use shopfds_config::{ConfigError, Env};

/// The process-wide rustls crypto provider (ring), installed on first use. Anything already
/// installed (by another library or an earlier call) is kept: any provider will do, but there
/// must be one, or rustls's default builders panic with two compiled in.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    if let Some(provider) = CryptoProvider::get_default() {
        return Arc::clone(provider);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// One or more CA certificates (PEM) that a peer's certificate must chain to.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCertificates {
    path: PathBuf,
    pem: Vec<u8>,
    count: usize,
}

impl CaCertificates {
    /// The CA file named by `variable`; `None` when unset.
    pub fn read(env: &Env, variable: &str) -> Result<Option<CaCertificates>, ConfigError> {
        let Some(path) = env.file(variable)? else {
            return Ok(None);
        };
        let pem = read(variable, &path)?;
        let count = certificates(variable, &path, &pem)?.len();
        Ok(Some(CaCertificates { path, pem, count }))
    }

    /// The PEM text as read.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many certificates the file holds (at least one).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Never true: a CA file without a certificate is refused at [`CaCertificates::read`].
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl std::fmt::Debug for CaCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaCertificates")
            .field("path", &self.path)
            .field("certificates", &self.count)
            .finish()
    }
}

/// A certificate chain (PEM, the leaf first) and its private key (PEM): who this process is to
/// its peer (a server's certificate, or a client certificate for mutual TLS).
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    cert_path: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl Identity {
    /// The pair named by `cert_variable` and `key_variable`: both set, or neither (`None`).
    /// The key must parse (PKCS#8, PKCS#1 or SEC1) and belong to the chain's first certificate.
    pub fn read(
        env: &Env,
        cert_variable: &str,
        key_variable: &str,
    ) -> Result<Option<Identity>, ConfigError> {
        let cert = env.file(cert_variable)?;
        let key = env.file(key_variable)?;
        let (cert_path, key_path) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    key_variable,
                    format!("must be set when {cert_variable} is (the certificate's key)"),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    cert_variable,
                    format!("must be set when {key_variable} is (the key's certificate)"),
                ));
            }
        };
        let cert_pem = read(cert_variable, &cert_path)?;
        let chain = certificates(cert_variable, &cert_path, &cert_pem)?;
        let key_pem = read(key_variable, &key_path)?;
        // The parser's message may quote the file; only the path is named.
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            ConfigError::new(
                key_variable,
                format!(
                    "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1) that can be read",
                    key_path.display()
                ),
            )
        })?;
        rustls::sign::CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(|e| {
            ConfigError::new(
                key_variable,
                format!(
                    "{} is not the key of the certificate in {cert_variable} ({})",
                    key_path.display(),
                    match e {
                        rustls::Error::InconsistentKeys(_) => "the public keys differ".to_owned(),
                        other => other.to_string(),
                    }
                ),
            )
        })?;
        Ok(Some(Identity {
            cert_path,
            cert_pem,
            key_pem,
        }))
    }

    /// The certificate chain, PEM.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    /// The private key, PEM: hand it to the TLS library, never to a log line.
    pub fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificate", &self.cert_path)
            .field("key", &"***")
            .finish()
    }
}

fn read(variable: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::new(variable, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate of a PEM file; an error naming `variable` when there is none or one is
/// malformed.
fn certificates(
    variable: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::new(
                variable,
                format!("{}: not a PEM certificate file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            variable,
            format!(
                "{} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, contents: &str) -> String {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path.to_str().unwrap().to_owned()
        }
    }

    fn pair(name: &str) -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.pem(), signing_key.serialize_pem())
    }

    #[test]
    fn unset_variables_mean_not_configured() {
        let env = Env::from_pairs([("CA", " ")]);
        assert_eq!(CaCertificates::read(&env, "CA"), Ok(None));
        assert_eq!(Identity::read(&env, "CERT", "KEY"), Ok(None));
    }

    #[test]
    fn a_certificate_and_its_key_are_read() {
        let files = Files::new();
        let (cert, key) = pair("localhost");
        let env = Env::from_pairs([
            ("CERT", files.write("cert.pem", &cert)),
            ("KEY", files.write("key.pem", &key)),
            ("CA", files.write("ca.pem", &cert)),
        ]);
        let identity = Identity::read(&env, "CERT", "KEY").unwrap().unwrap();
        assert_eq!(identity.cert_pem(), cert.as_bytes());
        assert_eq!(identity.key_pem(), key.as_bytes());
        let debug = format!("{identity:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        let ca = CaCertificates::read(&env, "CA").unwrap().unwrap();
        assert_eq!(ca.len(), 1);
    }

    #[test]
    fn a_key_that_does_not_parse_names_its_variable() {
        let files = Files::new();
        let (cert, _) = pair("localhost");
        let env = Env::from_pairs([
            ("CERT", files.write("cert.pem", &cert)),
            (
                "KEY",
                files.write("key.pem", "-----BEGIN PRIVATE KEY-----\nnot base64!\n"),
            ),
        ]);
        let error = Identity::read(&env, "CERT", "KEY").unwrap_err();
        assert_eq!(error.variable, "KEY");
        assert!(error.message.contains("no PEM private key"), "{error}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let files = Files::new();
        let (cert, _) = pair("a");
        let (_, other_key) = pair("b");
        let env = Env::from_pairs([
            ("CERT", files.write("cert.pem", &cert)),
            ("KEY", files.write("key.pem", &other_key)),
        ]);
        let error = Identity::read(&env, "CERT", "KEY").unwrap_err();
        assert_eq!(error.variable, "KEY");
        assert!(error.message.contains("not the key of"), "{error}");
        assert!(!error.message.contains("PRIVATE KEY"), "{error}");
    }

    #[test]
    fn half_a_pair_names_the_missing_variable() {
        let files = Files::new();
        let (cert, key) = pair("localhost");
        let cert_only = Env::from_pairs([("CERT", files.write("cert.pem", &cert))]);
        assert_eq!(
            Identity::read(&cert_only, "CERT", "KEY")
                .unwrap_err()
                .variable,
            "KEY"
        );
        let key_only = Env::from_pairs([("KEY", files.write("key.pem", &key))]);
        assert_eq!(
            Identity::read(&key_only, "CERT", "KEY")
                .unwrap_err()
                .variable,
            "CERT"
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let files = Files::new();
        let (_, key) = pair("localhost");
        let env = Env::from_pairs([
            ("CA", files.write("ca.pem", &key)),
            ("MISSING", "/nonexistent/ca.pem".to_owned()),
        ]);
        let error = CaCertificates::read(&env, "CA").unwrap_err();
        assert_eq!(error.variable, "CA");
        assert!(error.message.contains("no PEM certificate"), "{error}");
        assert_eq!(
            CaCertificates::read(&env, "MISSING").unwrap_err().variable,
            "MISSING"
        );
    }
}
