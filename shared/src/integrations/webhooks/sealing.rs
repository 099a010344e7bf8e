//! Subscription secrets are encrypted at rest (AES-256-GCM) under a key kept in Secrets Manager, so a
//! copy of the table (a backup, an export, a debugging scan) reveals no signing secret.
//!
//! The ciphertext names the key version that sealed it (`kid`), so rotating the sealing key with
//! `put-secret-value` keeps every stored secret readable through `AWSPREVIOUS`; a secret is sealed
//! again under the current key whenever it is rewritten. The subscription id is the associated data:
//! a sealed secret copied onto another subscription does not open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::Context;
pub use crate::store::webhooks::Sealed;
use crate::support::secrets::{SigningKey, key_bytes};

#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    #[error("no sealing key is configured")]
    NotConfigured,
    #[error(transparent)]
    Key(#[from] crate::support::secrets::SecretsError),
    #[error("sealed with key version {0}, which is neither current nor previous")]
    UnknownKey(String),
    #[error("sealed value does not open (corrupted, or moved from another record)")]
    Corrupt,
}

pub async fn seal(ctx: &Context, context_id: &str, plaintext: &[u8]) -> Result<Sealed, SealingError> {
    let ring = ctx.webhook_sealing_keys.as_ref().ok_or(SealingError::NotConfigured)?.get(ctx.secrets()).await?;
    Ok(seal_with(&ring.current, context_id, plaintext))
}

pub async fn open(ctx: &Context, context_id: &str, sealed: &Sealed) -> Result<Vec<u8>, SealingError> {
    let keys = ctx.webhook_sealing_keys.as_ref().ok_or(SealingError::NotConfigured)?;
    let mut ring = keys.get(ctx.secrets()).await?;
    if ring.find(&sealed.kid).is_none() {
        ring = keys.refresh_for_unknown_kid(ctx.secrets()).await?;
    }
    let key = ring.find(&sealed.kid).ok_or_else(|| SealingError::UnknownKey(sealed.kid.clone()))?;
    open_with(key, context_id, sealed)
}

fn aead_key(key: &SigningKey) -> LessSafeKey {
    // The stored secret is a long random string; its SHA-256 is a uniformly distributed AES-256 key.
    let bytes = Sha256::digest(key_bytes(key));
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("32-byte key"))
}

fn seal_with(key: &SigningKey, context_id: &str, plaintext: &[u8]) -> Sealed {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let mut data = plaintext.to_vec();
    aead_key(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context_id.as_bytes()), &mut data)
        .expect("AES-GCM seals any length we store");
    Sealed { kid: key.kid.clone(), blob: STANDARD.encode([nonce.as_slice(), &data].concat()) }
}

fn open_with(key: &SigningKey, context_id: &str, sealed: &Sealed) -> Result<Vec<u8>, SealingError> {
    let raw = STANDARD.decode(&sealed.blob).map_err(|_| SealingError::Corrupt)?;
    if raw.len() < NONCE_LEN {
        return Err(SealingError::Corrupt);
    }
    let (nonce, data) = raw.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealingError::Corrupt)?;
    let mut data = data.to_vec();
    let plain = aead_key(key)
        .open_in_place(nonce, Aad::from(context_id.as_bytes()), &mut data)
        .map_err(|_| SealingError::Corrupt)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, secret: &str) -> SigningKey {
        SigningKey { kid: kid.into(), secret: secret.as_bytes().to_vec().into() }
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_record() {
        let k = key("v1", "a-long-random-sealing-key-of-64-characters-aaaaaaaaaaaaaaaaaaaaa");
        let sealed = seal_with(&k, "sub-1", b"whsec_secret");
        assert_eq!(sealed.kid, "v1");
        assert!(!sealed.blob.contains("whsec"));
        assert_eq!(open_with(&k, "sub-1", &sealed).unwrap(), b"whsec_secret");
        assert!(matches!(open_with(&k, "sub-2", &sealed), Err(SealingError::Corrupt)));
        let other = key("v2", "another-long-random-sealing-key-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
        assert!(matches!(open_with(&other, "sub-1", &sealed), Err(SealingError::Corrupt)));
        let mut tampered = sealed.clone();
        tampered.blob.replace_range(20..21, if &tampered.blob[20..21] == "A" { "B" } else { "A" });
        assert!(open_with(&k, "sub-1", &tampered).is_err());
        assert_ne!(seal_with(&k, "sub-1", b"whsec_secret").blob, sealed.blob, "nonces are fresh");
    }
}
