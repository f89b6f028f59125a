//! Optional encryption of artifacts (`spec.encryption`): the compressed stream goes through
//! age (age-encryption.org/v1, X25519 recipients) before it is hashed and stored, so what the
//! destination holds — and what its SHA-256 covers — is ciphertext: a leaked bucket leaks
//! nothing. The `age` CLI decrypts an artifact with the same identity.

use futures::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// Recipients to encrypt to, and the identities that decrypt (absent: this Nova can write
/// artifacts but not read them back: no drill, no restore).
#[derive(Clone, Default)]
pub struct Keys {
    pub recipients: Vec<age::x25519::Recipient>,
    pub identities: Vec<age::x25519::Identity>,
}

impl std::fmt::Debug for Keys {
    // Identities are secrets: counted, never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} recipients, {} identities)", self.recipients.len(), self.identities.len())
    }
}

/// The lines of a key file that are not blank or `#` comments (age's own file format).
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().map(str::trim).enumerate().filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// `age1...` recipients, one per line; errors name `field` and the line.
pub fn recipients(text: &str, field: &str) -> Result<Vec<age::x25519::Recipient>, String> {
    let out: Result<Vec<_>, String> = lines(text)
        .map(|(i, l)| {
            l.parse().map_err(|e| format!("{field}: line {}: not an age recipient (age1...): {e}", i + 1))
        })
        .collect();
    let out = out?;
    if out.is_empty() {
        return Err(format!("{field}: no recipient in it (lines like age1...)"));
    }
    Ok(out)
}

/// `AGE-SECRET-KEY-1...` identities, one per line (age-keygen's output); errors never quote
/// the line.
pub fn identities(text: &str, field: &str) -> Result<Vec<age::x25519::Identity>, String> {
    let out: Result<Vec<_>, String> = lines(text)
        .map(|(i, l)| {
            l.parse::<age::x25519::Identity>()
                .map_err(|_| format!("{field}: line {}: not an age identity (AGE-SECRET-KEY-1...)", i + 1))
        })
        .collect();
    let out = out?;
    if out.is_empty() {
        return Err(format!("{field}: no identity in it (lines like AGE-SECRET-KEY-1...)"));
    }
    Ok(out)
}

impl Keys {
    /// From the Secrets' bytes: `recipients` (required) and `identities` (optional).
    pub fn from_secrets(recipients_text: &[u8], identities_text: Option<&[u8]>) -> Result<Self, String> {
        let text = |b: &[u8], field: &str| {
            String::from_utf8(b.to_vec()).map_err(|_| format!("{field}: not UTF-8 text"))
        };
        let rf = "spec.encryption.recipientsSecretRef";
        let recipients = recipients(&text(recipients_text, rf)?, rf)?;
        let identities = match identities_text {
            Some(b) => {
                let f = "spec.encryption.identitySecretRef";
                identities(&text(b, f)?, f)?
            }
            None => Vec::new(),
        };
        Ok(Self { recipients, identities })
    }

    /// What the manifest says of the encryption (never a key).
    pub fn describe(&self) -> String {
        format!("age (X25519), {} recipient(s)", self.recipients.len())
    }

    /// Encrypts all of `plain` into `out`, then closes it.
    pub async fn encrypt<R, W>(&self, plain: R, out: W) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let enc = age::Encryptor::with_recipients(self.recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(std::io::Error::other)?;
        let mut w = enc.wrap_async_output(out.compat_write()).await?;
        futures::io::copy(plain.compat(), &mut w).await?;
        w.close().await
    }

    /// Decrypts `cipher` into `out`, then closes it. A wrong identity or a changed byte is an
    /// error (age authenticates every 64 KiB chunk).
    pub async fn decrypt<R, W>(&self, cipher: R, out: W) -> Result<(), String>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.identities.is_empty() {
            return Err(
                "spec.encryption.identitySecretRef: not set; an encrypted artifact cannot be read without it"
                    .into(),
            );
        }
        let d =
            age::Decryptor::new_async(cipher.compat()).await.map_err(|e| format!("not an age file: {e}"))?;
        let mut r = d
            .decrypt_async(self.identities.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| format!("decryption refused ({e}): check spec.encryption.identitySecretRef"))?;
        let mut w = out.compat_write();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = r.read(&mut buf).await.map_err(|e| format!("decryption failed: {e}"))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).await.map_err(|e| format!("passing the decrypted data on: {e}"))?;
        }
        w.close().await.map_err(|e| format!("passing the decrypted data on: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[tokio::test]
    async fn a_round_trip_and_a_wrong_identity_refused() {
        let id = age::x25519::Identity::generate();
        let text = format!("# backup key\n{}\n", id.to_public());
        let keys = Keys {
            recipients: recipients(&text, "f").unwrap(),
            identities: identities(id.to_string().expose_secret(), "g").unwrap(),
        };
        let plain = b"the plain bytes of a dump".repeat(10_000);
        let mut cipher = Vec::new();
        keys.encrypt(&plain[..], &mut cipher).await.unwrap();
        assert!(cipher.starts_with(b"age-encryption.org/v1"));
        assert!(!cipher.windows(15).any(|w| w == b"the plain bytes"));
        let mut back = Vec::new();
        keys.decrypt(&cipher[..], &mut back).await.unwrap();
        assert_eq!(back, plain);
        let other = Keys { identities: vec![age::x25519::Identity::generate()], ..keys.clone() };
        let e = other.decrypt(&cipher[..], &mut Vec::new()).await.unwrap_err();
        assert!(e.contains("identitySecretRef"), "{e}");
        let mut bad = cipher.clone();
        let at = bad.len() - 100;
        bad[at] ^= 1;
        assert!(keys.decrypt(&bad[..], &mut Vec::new()).await.is_err());
    }

    #[test]
    fn bad_keys_name_the_field_and_the_line_but_never_a_secret() {
        let e = recipients("age1nope\n", "spec.encryption.recipientsSecretRef").unwrap_err();
        assert!(e.starts_with("spec.encryption.recipientsSecretRef: line 1:"), "{e}");
        let Err(e) = identities("\nAGE-SECRET-KEY-1SECRETBUTBROKEN\n", "spec.encryption.identitySecretRef")
        else {
            panic!("a broken identity accepted")
        };
        assert!(e.contains("line 2") && !e.contains("SECRETBUTBROKEN"), "{e}");
        assert!(recipients("# only a comment\n", "f").unwrap_err().contains("no recipient"));
    }
}
