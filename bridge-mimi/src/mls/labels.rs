//! RFC 9420 §5.1.2 `SignWithLabel` / `VerifyWithLabel` and §5.1.3 `EncryptWithLabel` /
//! `DecryptWithLabel`, with our cipher suite: what protocol-06 signs and encrypts outside MLS
//! messages (`/groupInfo` requests and responses, §5.6).

use openmls::prelude::{HpkeCiphertext, OpenMlsCrypto};
use openmls_traits::signatures::Signer as _;
use tls_codec::{Serialize as _, VLBytes};

use super::uri::UserUri;
use super::{CIPHERSUITE, MlsError, MlsHost};

/// `struct { opaque label<V> = "MLS 1.0 " + Label; opaque content<V>; }`: the `SignContent`
/// that `SignWithLabel` signs, and the `EncryptContext` that `EncryptWithLabel` uses as HPKE
/// info (they have the same shape).
pub fn labeled(label: &str, content: &[u8]) -> Result<Vec<u8>, MlsError> {
    let mut out = Vec::new();
    VLBytes::new(format!("MLS 1.0 {label}").into_bytes())
        .tls_serialize(&mut out)
        .and_then(|_| VLBytes::new(content.to_vec()).tls_serialize(&mut out))
        .map_err(|e| MlsError::Malformed(format!("labeled content: {e}")))?;
    Ok(out)
}

/// A signature over `content` under `label` (`SignWithLabel`), with the signer's public key and
/// credential identity (a basic credential: `mimi://DOMAIN` for the hub, a client URI for a
/// puppet).
#[derive(Debug, Clone)]
pub struct LabeledSignature {
    /// The signer's signature public key.
    pub public_key: Vec<u8>,
    /// The identity of its basic credential.
    pub identity: Vec<u8>,
    /// `SignWithLabel(key, label, content)`.
    pub signature: Vec<u8>,
}

/// `SignWithLabel` with `identity`'s key, whose credential identity is `name`.
fn sign_with(
    identity: &super::clients::Identity,
    name: String,
    label: &str,
    content: &[u8],
) -> Result<LabeledSignature, MlsError> {
    let signature = identity
        .signer
        .sign(&labeled(label, content)?)
        .map_err(|e| MlsError::Malformed(format!("signature of {name}: {e:?}")))?;
    Ok(LabeledSignature {
        public_key: identity.signer.to_public_vec(),
        identity: name.into_bytes(),
        signature,
    })
}

impl MlsHost {
    /// `VerifyWithLabel(public_key, label, content, signature)`.
    pub fn verify_with_label(
        &self,
        public_key: &[u8],
        label: &str,
        content: &[u8],
        signature: &[u8],
    ) -> Result<(), MlsError> {
        self.crypto
            .verify_signature(
                CIPHERSUITE.signature_algorithm(),
                &labeled(label, content)?,
                public_key,
                signature,
            )
            .map_err(|_| MlsError::Malformed(format!("bad {label} signature")))
    }

    /// The hub's signature public key and credential identity (`mimi://DOMAIN`).
    pub fn hub_sender(&self) -> Result<(Vec<u8>, Vec<u8>), MlsError> {
        let identity = self.transaction(|tx| self.hub_identity(tx))?;
        Ok((identity.signer.to_public_vec(), self.hub_uri().into_bytes()))
    }

    /// `SignWithLabel` with the hub's key (the one in every hosted group's `external_senders`).
    pub fn hub_sign_with_label(
        &self,
        label: &str,
        content: &[u8],
    ) -> Result<LabeledSignature, MlsError> {
        let identity = self.transaction(|tx| self.hub_identity(tx))?;
        sign_with(&identity, self.hub_uri(), label, content)
    }

    /// The signature public key and credential identity (its client URI) of `user`'s puppet
    /// client, which must exist.
    pub fn client_key(&self, user: &UserUri) -> Result<(Vec<u8>, Vec<u8>), MlsError> {
        let identity = self.transaction(|tx| self.member_identity(tx, user))?;
        Ok((
            identity.signer.to_public_vec(),
            user.puppet_client().to_string().into_bytes(),
        ))
    }

    /// `SignWithLabel` with the key of `user`'s puppet client, which must exist
    /// ([`MlsHost::ensure_client`]): a request a puppet makes of another provider
    /// (`/keyMaterial`).
    pub fn sign_with_label_as(
        &self,
        user: &UserUri,
        label: &str,
        content: &[u8],
    ) -> Result<LabeledSignature, MlsError> {
        let identity = self.transaction(|tx| self.member_identity(tx, user))?;
        sign_with(&identity, user.puppet_client().to_string(), label, content)
    }

    /// `EncryptWithLabel(public_key, label, context, plaintext)`: (kem_output, ciphertext).
    pub fn encrypt_with_label(
        &self,
        public_key: &[u8],
        label: &str,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), MlsError> {
        let sealed = self
            .crypto
            .hpke_seal(
                CIPHERSUITE.hpke_config(),
                public_key,
                &labeled(label, context)?,
                &[],
                plaintext,
            )
            .map_err(|e| MlsError::Malformed(format!("HPKE encryption: {e:?}")))?;
        Ok((
            sealed.kem_output.as_slice().to_vec(),
            sealed.ciphertext.as_slice().to_vec(),
        ))
    }

    /// `DecryptWithLabel(private_key, label, context, kem_output, ciphertext)`.
    pub fn decrypt_with_label(
        &self,
        private_key: &[u8],
        label: &str,
        context: &[u8],
        kem_output: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, MlsError> {
        let input = HpkeCiphertext {
            kem_output: kem_output.to_vec().into(),
            ciphertext: ciphertext.to_vec().into(),
        };
        self.crypto
            .hpke_open(
                CIPHERSUITE.hpke_config(),
                &input,
                private_key,
                &labeled(label, context)?,
                &[],
            )
            .map_err(|_| MlsError::Malformed(format!("cannot decrypt {label}")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openmls_traits::crypto::OpenMlsCrypto as _;

    use super::*;
    use crate::mls::kv::StoreKv;

    #[test]
    fn signatures_and_encryption_round_trip_under_their_labels() {
        let host = MlsHost::open(
            "hub.example",
            Arc::new(StoreKv::new(
                Arc::new(bridge_core::MemoryStore::new()),
                b"mimi/",
            )),
        );
        let signed = host
            .hub_sign_with_label("GroupInfoResponseTBS", b"content")
            .expect("signs");
        assert_eq!(signed.identity, b"mimi://hub.example");
        host.verify_with_label(
            &signed.public_key,
            "GroupInfoResponseTBS",
            b"content",
            &signed.signature,
        )
        .expect("verifies");
        assert!(
            host.verify_with_label(
                &signed.public_key,
                "GroupInfoRequestTBS",
                b"content",
                &signed.signature
            )
            .is_err(),
            "another label"
        );
        let keys = host
            .crypto
            .derive_hpke_keypair(CIPHERSUITE.hpke_config(), &[7; 32])
            .expect("key pair");
        let (kem, ct) = host
            .encrypt_with_label(&keys.public, "label", b"room", b"secret")
            .expect("encrypts");
        let opened = host
            .decrypt_with_label(&keys.private, "label", b"room", &kem, &ct)
            .expect("decrypts");
        assert_eq!(opened, b"secret");
        assert!(
            host.decrypt_with_label(&keys.private, "label", b"other room", &kem, &ct)
                .is_err()
        );
    }
}
