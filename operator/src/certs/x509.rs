//! Reading an issued chain: validity, names, serial, the key's shape, and the identifier ACME
//! Renewal Information asks for.

use k8s_openapi::jiff::Timestamp;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::acme::keys::Shape;
use crate::api::tls::KeyAlgorithm;

/// What Nova needs to know about a chain's leaf.
#[derive(Clone, Debug, PartialEq)]
pub struct Leaf {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// Serial number, lower-case hex without separators.
    pub serial: String,
    /// DNS names in the subjectAltName, in certificate order.
    pub dns_names: Vec<String>,
    pub key: Option<Shape>,
    /// DER of the subject public key info, to check a private key belongs to it.
    pub spki_der: Vec<u8>,
    /// RFC 9773 certificate identifier (`<aki>.<serial>`), when the leaf has an AKI.
    pub ari_id: Option<String>,
}

/// The certificates of a PEM chain, DER, in order.
pub fn chain_der(chain_pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes()) {
        let pem = pem.map_err(|e| format!("PEM: {e}"))?;
        if pem.label == "CERTIFICATE" {
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    Ok(out)
}

/// Parses the first certificate of `chain_pem`.
pub fn leaf(chain_pem: &str) -> Result<Leaf, String> {
    let ders = chain_der(chain_pem)?;
    let (_, cert) = X509Certificate::from_der(&ders[0]).map_err(|e| format!("X.509: {e}"))?;
    let ts = |t: x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp()).map_err(|e| format!("validity out of range: {e}"))
    };
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                dns_names.push((*d).to_owned());
            }
        }
    }
    let key = match cert.public_key().parsed() {
        Ok(PublicKey::EC(p)) => Some(Shape { algorithm: KeyAlgorithm::Ecdsa, size: p.key_size() as i32 }),
        Ok(PublicKey::RSA(r)) => Some(Shape { algorithm: KeyAlgorithm::Rsa, size: r.key_size() as i32 }),
        _ => None,
    };
    let der = CertificateDer::from(ders[0].as_slice());
    let ari_id = instant_acme::CertificateIdentifier::try_from(&der).ok().map(|id| id.to_string());
    Ok(Leaf {
        not_before: ts(cert.validity().not_before)?,
        not_after: ts(cert.validity().not_after)?,
        serial: hex::encode(cert.raw_serial()),
        dns_names,
        key,
        spki_der: cert.public_key().raw.to_vec(),
        ari_id,
    })
}

/// Whether `key_pem` is the private key of `leaf`.
pub fn key_matches(leaf: &Leaf, key_pem: &str) -> bool {
    use rcgen::PublicKeyData;
    rcgen::KeyPair::from_pem(key_pem).is_ok_and(|k| k.subject_public_key_info() == leaf.spki_der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_validity_key_and_matches_its_key() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example.test".into(), "b.example.test".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 4, 1);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc]));
        let cert = params.self_signed(&key).unwrap();
        let leaf = leaf(&cert.pem()).unwrap();
        assert_eq!(leaf.dns_names, ["a.example.test", "b.example.test"]);
        assert_eq!(leaf.not_before.to_string(), "2026-01-01T00:00:00Z");
        assert_eq!(leaf.not_after.to_string(), "2026-04-01T00:00:00Z");
        assert_eq!(leaf.serial, "0abc");
        assert_eq!(leaf.key, Some(Shape { algorithm: KeyAlgorithm::Ecdsa, size: 384 }));
        assert!(key_matches(&leaf, &key.serialize_pem()));
        let other = rcgen::KeyPair::generate().unwrap();
        assert!(!key_matches(&leaf, &other.serialize_pem()));
        assert!(leaf_or_err("not a certificate").contains("no certificate"));
    }

    fn leaf_or_err(pem: &str) -> String {
        leaf(pem).unwrap_err()
    }
}
