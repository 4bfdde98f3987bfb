//! Certificates made by a test: a CA of its own ([`TestPki`]) that signs a server certificate for
//! `127.0.0.1`/`localhost` and client certificates, written as PEM files to a temp dir that lives
//! as long as the [`TestPki`]. Nothing else trusts these CAs, so a test can also show that a peer
//! with another CA's certificate is refused.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate (chain, PEM) and its private key (PEM, PKCS#8), as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test's own certificate authority and the files it wrote.
pub struct TestPki {
    name: String,
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("name", &self.name)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl TestPki {
    /// A new CA, "ShopFDS test CA `name`", its certificate written to [`TestPki::ca_file`].
    pub fn new(name: &str) -> anyhow::Result<TestPki> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(&format!("ShopFDS test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let dir = crate::temp_dir("pki")?;
        let pki = TestPki {
            name: name.to_owned(),
            ca,
            dir,
        };
        write(&pki.ca_file(), &pki.ca.pem())?;
        Ok(pki)
    }

    /// The CA's certificate, PEM.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The directory holding every file of this CA.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `127.0.0.1` and `localhost`, files `<name>.pem`/`<name>.key`.
    pub fn server(&self, name: &str) -> anyhow::Result<CertFiles> {
        self.server_for(name, &["127.0.0.1", "localhost"])
    }

    /// A server certificate for the DNS names and IP addresses `names` only.
    pub fn server_for(&self, name: &str, names: &[&str]) -> anyhow::Result<CertFiles> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name = dn(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(name, params)
    }

    /// A client certificate (for mutual TLS) with common name `name`.
    pub fn client(&self, name: &str) -> anyhow::Result<CertFiles> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, params)
    }

    fn issue(&self, name: &str, mut params: CertificateParams) -> anyhow::Result<CertFiles> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// A path as a string, for the environment variables and config files that name it.
pub fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
