//! Certificates made on the spot: the in-memory self-signed serving certificate, and the CA,
//! server and client certificates of the demo and the tests. EC P-256 keys (fast to generate,
//! accepted everywhere), PKCS#8 PEM on disk (what every client reads).

use anyhow::Result;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// A certificate and its private key.
pub struct KeyPair {
    /// The certificate, signed by its CA or by itself.
    pub cert: X509,
    /// Its private key (EC P-256).
    pub key: PKey<Private>,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Extended key usage `serverAuth`: presented by a TLS server.
    Server,
    /// Extended key usage `clientAuth`: presented by a TLS client (mutual TLS).
    Client,
}

impl KeyPair {
    /// The certificate as PEM, to write where clients and servers read certificate files.
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert.to_pem().expect("encoding a certificate we built")
    }

    /// The key as PKCS#8 PEM, the encoding every TLS stack reads.
    pub fn key_pem(&self) -> Vec<u8> {
        self.key.private_key_to_pem_pkcs8().expect("encoding a key we generated")
    }

    /// A CA certificate valid for ten years.
    pub fn new_ca(common_name: &str) -> Result<Self> {
        let key = new_key()?;
        let mut b = builder(common_name, &[], &key, 3650)?;
        let v = subject(common_name, &[])?;
        b.set_issuer_name(&v)?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().digital_signature().build()?)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(Self { cert: b.build(), key })
    }

    /// A leaf certificate signed by this CA. `sans` are DNS names or IP addresses (servers);
    /// `organizations` become the O entries (the groups of a client).
    pub fn issue(&self, common_name: &str, organizations: &[&str], sans: &[&str], usage: Usage) -> Result<KeyPair> {
        self.issue_with_validity(common_name, organizations, sans, usage, 0, 825)
    }

    /// As [`issue`](Self::issue), valid from `not_before_days` (may be negative) for `days` days.
    pub fn issue_with_validity(
        &self,
        common_name: &str,
        organizations: &[&str],
        sans: &[&str],
        usage: Usage,
        not_before_days: i64,
        days: u32,
    ) -> Result<KeyPair> {
        let key = new_key()?;
        let mut b = builder(common_name, organizations, &key, days)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
        let start = now + not_before_days * 86_400 - 60;
        let v = Asn1Time::from_unix(start)?;
        b.set_not_before(&v)?;
        let v = Asn1Time::from_unix(start + i64::from(days) * 86_400)?;
        b.set_not_after(&v)?;
        b.set_issuer_name(self.cert.subject_name())?;
        leaf_extensions(&mut b, Some(&*self.cert), sans, usage)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(KeyPair { cert: b.build(), key })
    }

    /// A self-signed serving certificate (its own trust anchor).
    pub fn new_self_signed_server(common_name: &str, sans: &[&str]) -> Result<Self> {
        let key = new_key()?;
        let mut b = builder(common_name, &[], &key, 365)?;
        let v = subject(common_name, &[])?;
        b.set_issuer_name(&v)?;
        leaf_extensions(&mut b, None, sans, Usage::Server)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(KeyPair { cert: b.build(), key })
    }
}

fn new_key() -> Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

fn subject(common_name: &str, organizations: &[&str]) -> Result<openssl::x509::X509Name> {
    let mut name = X509NameBuilder::new()?;
    for o in organizations {
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, o)?;
    }
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    Ok(name.build())
}

fn builder(common_name: &str, organizations: &[&str], key: &PKey<Private>, days: u32) -> Result<X509Builder> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let v = serial.to_asn1_integer()?;
    b.set_serial_number(&v)?;
    let v = subject(common_name, organizations)?;
    b.set_subject_name(&v)?;
    b.set_pubkey(key)?;
    let v = Asn1Time::days_from_now(0)?;
    b.set_not_before(&v)?;
    let v = Asn1Time::days_from_now(days)?;
    b.set_not_after(&v)?;
    Ok(b)
}

fn leaf_extensions(
    b: &mut X509Builder,
    issuer: Option<&openssl::x509::X509Ref>,
    sans: &[&str],
    usage: Usage,
) -> Result<()> {
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build()?)?;
    let mut eku = ExtendedKeyUsage::new();
    match usage {
        Usage::Server => eku.server_auth(),
        Usage::Client => eku.client_auth(),
    };
    b.append_extension(eku.build()?)?;
    if !sans.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for s in sans {
            if s.parse::<std::net::IpAddr>().is_ok() {
                san.ip(s);
            } else {
                san.dns(s);
            }
        }
        let ext = san.build(&b.x509v3_context(issuer, None))?;
        b.append_extension(ext)?;
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer, None))?;
    b.append_extension(ski)?;
    if issuer.is_some() {
        let aki = AuthorityKeyIdentifier::new().keyid(false).build(&b.x509v3_context(issuer, None))?;
        b.append_extension(aki)?;
    }
    Ok(())
}
