//! A throw-away certificate authority for one stack.
//!
//! Everything on the stack speaks TLS with certificates from this CA, so tests exercise the
//! same trust configuration a real deployment needs (a CA bundle), instead of disabling
//! verification. Keys never leave the state directory and are written owner-readable only.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::fsutil::{write_private, write_public};

/// Common name of the admin client certificate.
pub const ADMIN_CN: &str = "portcullis-admin";
/// Organisation (Kubernetes group) of the admin client certificate: cluster-admin via RBAC
/// bootstrap.
pub const ADMIN_GROUP: &str = "system:masters";
/// In-cluster name of the API server's Service IP in the default `10.96.0.0/16` range.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// A certificate and its private key, as files.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CertFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM PKCS#8 private key (mode 0600).
    pub key: PathBuf,
}

/// The CA of one stack: issues serving and client certificates into its directory.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    /// Creates a new CA in `dir` (overwriting an old one).
    pub fn generate(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = KeyPair::generate().context("generating the CA key")?;
        let params = ca_params();
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        let ca_pem = cert.pem();
        write_public(&dir.join("ca.crt"), ca_pem.as_bytes())?;
        write_private(&dir.join("ca.key"), key.serialize_pem().as_bytes())?;
        Ok(Pki {
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
            ca_pem,
        })
    }

    /// Loads the CA an earlier [`Pki::generate`] wrote to `dir`, so a test can issue more
    /// certificates (e.g. for a gateway) that the running stack already trusts.
    pub fn load(dir: &Path) -> Result<Pki> {
        let key_pem = std::fs::read_to_string(dir.join("ca.key"))
            .with_context(|| format!("reading the CA key in {}", dir.display()))?;
        let ca_pem = std::fs::read_to_string(dir.join("ca.crt"))
            .with_context(|| format!("reading the CA certificate in {}", dir.display()))?;
        let key = KeyPair::from_pem(&key_pem).context("parsing the CA key")?;
        // The issuer needs only the subject, key-id method and key usages, which `ca_params`
        // reproduces exactly; the signature itself comes from the key.
        Ok(Pki {
            dir: dir.to_owned(),
            issuer: Issuer::new(ca_params(), key),
            ca_pem,
        })
    }

    /// Path of the CA certificate (the trust bundle for everything on the stack).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The CA certificate as PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a serving certificate named `name` valid for `127.0.0.1`, `::1`, `localhost` and
    /// `extra_names` (DNS names or IP literals).
    pub fn issue_serving(&self, name: &str, extra_names: &[String]) -> Result<CertFiles> {
        let mut sans = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into().context("SAN localhost")?),
        ];
        for extra in extra_names {
            sans.push(match extra.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    extra
                        .clone()
                        .try_into()
                        .with_context(|| format!("invalid DNS name {extra:?}"))?,
                ),
            });
        }
        let mut params = leaf_params(name);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(name, params)
    }

    /// Issues a client certificate for the Kubernetes user `cn` in groups `orgs`.
    pub fn issue_client(&self, name: &str, cn: &str, orgs: &[&str]) -> Result<CertFiles> {
        let mut params = leaf_params(cn);
        for org in orgs {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *org);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, params)
    }

    fn issue(&self, name: &str, params: CertificateParams) -> Result<CertFiles> {
        let key = KeyPair::generate().with_context(|| format!("generating the {name} key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the {name} certificate"))?;
        let files = CertFiles {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        write_public(&files.cert, cert.pem().as_bytes())?;
        write_private(&files.key, key.serialize_pem().as_bytes())?;
        Ok(files)
    }

    /// Generates the key pair the API server signs ServiceAccount tokens with (ES256).
    pub fn service_account_keys(&self) -> Result<CertFiles> {
        let key = KeyPair::generate().context("generating the service-account key")?;
        let files = CertFiles {
            cert: self.dir.join("sa.pub"),
            key: self.dir.join("sa.key"),
        };
        write_public(&files.cert, key.public_key_pem().as_bytes())?;
        write_private(&files.key, key.serialize_pem().as_bytes())?;
        Ok(files)
    }
}

/// Parameters of the CA; deterministic so [`Pki::load`] can rebuild the issuer.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "portcullis test CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}
