//! Certificate private keys and CSRs: ECDSA P-256 / P-384 through rcgen (ring), RSA through
//! the `rsa` crate (ring signs with RSA keys but cannot make them).

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

use crate::api::tls::{KeyAlgorithm, PrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "spec.privateKey: size {size} is not allowed for {algorithm:?} (ECDSA: 256 or 384; RSA: 2048, 3072 or 4096)"
    )]
    Size { algorithm: KeyAlgorithm, size: i32 },
    #[error("making the private key: {0}")]
    Generate(String),
    #[error("the private key does not parse: {0}")]
    Parse(String),
    #[error("making the certificate request: {0}")]
    Csr(String),
}

/// What kind of key a PEM holds, to compare with `spec.privateKey`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub algorithm: KeyAlgorithm,
    pub size: i32,
}

impl Shape {
    pub fn of(spec: &PrivateKey) -> Self {
        Self { algorithm: spec.algorithm, size: spec.size }
    }
}

/// A new private key as `spec` asks, PKCS#8 PEM.
pub fn generate(spec: &PrivateKey) -> Result<String, Error> {
    let bad = || Error::Size { algorithm: spec.algorithm, size: spec.size };
    match spec.algorithm {
        KeyAlgorithm::Ecdsa => {
            let alg = match spec.size {
                256 => &PKCS_ECDSA_P256_SHA256,
                384 => &PKCS_ECDSA_P384_SHA384,
                _ => return Err(bad()),
            };
            Ok(KeyPair::generate_for(alg).map_err(|e| Error::Generate(e.to_string()))?.serialize_pem())
        }
        KeyAlgorithm::Rsa => {
            let bits = match spec.size {
                2048 | 3072 | 4096 => spec.size as usize,
                _ => return Err(bad()),
            };
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
                .map_err(|e| Error::Generate(e.to_string()))?;
            Ok(key.to_pkcs8_pem(LineEnding::LF).map_err(|e| Error::Generate(e.to_string()))?.to_string())
        }
    }
}

/// The shape of the key in `pem` (PKCS#8).
pub fn shape(pem: &str) -> Result<Shape, Error> {
    let key = KeyPair::from_pem(pem).map_err(|e| Error::Parse(e.to_string()))?;
    let alg = key.algorithm();
    let shape = if alg == &PKCS_ECDSA_P256_SHA256 {
        Shape { algorithm: KeyAlgorithm::Ecdsa, size: 256 }
    } else if alg == &PKCS_ECDSA_P384_SHA384 {
        Shape { algorithm: KeyAlgorithm::Ecdsa, size: 384 }
    } else {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let rsa = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| Error::Parse(e.to_string()))?;
        Shape { algorithm: KeyAlgorithm::Rsa, size: (rsa.size() * 8) as i32 }
    };
    Ok(shape)
}

/// A DER certificate request for `names`, signed with `key_pem`.
pub fn csr(key_pem: &str, names: &[String]) -> Result<Vec<u8>, Error> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Parse(e.to_string()))?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| Error::Csr(e.to_string()))?;
    params.distinguished_name = DistinguishedName::new();
    let req = params.serialize_request(&key).map_err(|e| Error::Csr(e.to_string()))?;
    Ok(req.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tls::RotationPolicy;

    fn spec(algorithm: KeyAlgorithm, size: i32) -> PrivateKey {
        PrivateKey { algorithm, size, rotation_policy: RotationPolicy::Always }
    }

    #[test]
    fn every_allowed_shape_is_made_and_recognised() {
        for (alg, size) in [(KeyAlgorithm::Ecdsa, 256), (KeyAlgorithm::Ecdsa, 384), (KeyAlgorithm::Rsa, 2048)]
        {
            let pem = generate(&spec(alg, size)).unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{alg:?} {size}: PKCS#8");
            assert_eq!(shape(&pem).unwrap(), Shape { algorithm: alg, size });
            assert!(!csr(&pem, &["a.example.test".into()]).unwrap().is_empty());
        }
    }

    #[test]
    fn sizes_outside_the_algorithm_are_refused_naming_the_field() {
        let e = generate(&spec(KeyAlgorithm::Ecdsa, 2048)).unwrap_err().to_string();
        assert!(e.contains("spec.privateKey") && e.contains("256 or 384"), "{e}");
        assert!(generate(&spec(KeyAlgorithm::Rsa, 1024)).is_err());
    }
}
