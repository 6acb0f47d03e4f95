//! Puppet clients, the hub's signing identity, and KeyPackages.
//!
//! Records (JSON, beside openmls' own state):
//! - `mls/hub` → the hub's signature public key (its key pair is in namespace `mimi://DOMAIN`);
//! - `mls/u/<user URI>` → the puppet's signature public key and its KeyPackages (hash
//!   reference, `not_after`, handed out or not);
//! - `mls/kp/<hex KeyPackageRef>` → the user URI, to route a Welcome to its puppet.

use std::time::{SystemTime, UNIX_EPOCH};

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::storage::StorageProvider as _;
use serde::{Deserialize, Serialize};

use super::uri::{ClientUri, UserUri};
use super::{CIPHERSUITE, MlsError, MlsHost, Provider, Tx, mls_err};

/// How the host manages each puppet's KeyPackages.
#[derive(Debug, Clone, Copy)]
pub struct KeyPackageSettings {
    /// KeyPackages generated at once.
    pub batch: usize,
    /// Generate a new batch when fewer unused, unexpired ones remain.
    pub low_water: usize,
    /// Lifetime of a new KeyPackage, in seconds.
    pub lifetime_secs: u64,
    /// Never hand out a KeyPackage that expires within this many seconds.
    pub min_remaining_secs: u64,
}

impl Default for KeyPackageSettings {
    fn default() -> Self {
        Self {
            batch: 8,
            low_water: 3,
            lifetime_secs: 28 * 24 * 3600,
            min_remaining_secs: 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyPackageEntry {
    hash_ref: KeyPackageRef,
    not_after: u64,
    taken: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClientRecord {
    public_key: Vec<u8>,
    key_packages: Vec<KeyPackageEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HubRecord {
    public_key: Vec<u8>,
}

/// A client's signing material, loaded for one operation.
pub(crate) struct Identity {
    pub(crate) signer: SignatureKeyPair,
    pub(crate) credential: CredentialWithKey,
}

const HUB_KEY: &str = "mls/hub";

fn user_key(user: &UserUri) -> String {
    format!("mls/u/{user}")
}

fn key_package_key(hash_ref: &[u8]) -> String {
    let mut key = String::from("mls/kp/");
    for byte in hash_ref {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The leaf capabilities of every puppet: the MIMI extension and proposal types on top of the
/// RFC 9420 defaults.
pub(crate) fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[CIPHERSUITE]),
        Some(&[ExtensionType::AppDataDictionary]),
        Some(&[ProposalType::AppDataUpdate, ProposalType::SelfRemove]),
        Some(&[CredentialType::Basic]),
    )
}

impl MlsHost {
    /// The hub's URI (`mimi://DOMAIN`), its storage namespace and credential identity.
    pub fn hub_uri(&self) -> String {
        format!("mimi://{}", self.domain)
    }

    /// The puppet client of `user` on this host.
    pub fn puppet(&self, user: &str) -> UserUri {
        UserUri::new(&self.domain, user)
    }

    /// Loads the signing identity kept in namespace `owner` under `public_key`, or creates one
    /// (true: created) when there is none yet.
    fn identity(
        &self,
        tx: &Tx,
        owner: &str,
        public_key: Option<&[u8]>,
    ) -> Result<(Identity, bool), MlsError> {
        let provider = self.provider(tx, owner);
        let existing = match public_key {
            Some(pk) => {
                SignatureKeyPair::read(provider.storage(), pk, CIPHERSUITE.signature_algorithm())
            }
            None => None,
        };
        let (signer, created) = match existing {
            Some(signer) => (signer, false),
            None => {
                let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
                    .map_err(|e| mls_err("signature key generation")(&format!("{e:?}")))?;
                signer.store(provider.storage())?;
                (signer, true)
            }
        };
        let credential = CredentialWithKey {
            credential: BasicCredential::new(owner.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Ok((Identity { signer, credential }, created))
    }

    /// The hub's identity (the groups' external sender), created on first use.
    pub(crate) fn hub_identity(&self, tx: &Tx) -> Result<Identity, MlsError> {
        let record: Option<HubRecord> = self.get_record(tx, HUB_KEY)?;
        let (identity, created) = self.identity(
            tx,
            &self.hub_uri(),
            record.as_ref().map(|r| r.public_key.as_slice()),
        )?;
        if created {
            let record = HubRecord {
                public_key: identity.signer.to_public_vec(),
            };
            self.put_record(tx, HUB_KEY, &record)?;
        }
        Ok(identity)
    }

    fn client_record(&self, tx: &Tx, user: &UserUri) -> Result<Option<ClientRecord>, MlsError> {
        self.get_record(tx, &user_key(user))
    }

    /// The puppet's identity, creating its keys on first use.
    pub(crate) fn client_identity(&self, tx: &Tx, user: &UserUri) -> Result<Identity, MlsError> {
        let client = user.puppet_client().to_string();
        let record = self.client_record(tx, user)?;
        let (identity, created) = self.identity(
            tx,
            &client,
            record.as_ref().map(|r| r.public_key.as_slice()),
        )?;
        if created || record.is_none() {
            let record = ClientRecord {
                public_key: identity.signer.to_public_vec(),
                key_packages: Vec::new(),
            };
            self.put_record(tx, &user_key(user), &record)?;
        }
        Ok(identity)
    }

    /// The identity of `user`'s puppet, which must exist (a member of a room): never writes,
    /// so that an operation confined to one room may use it.
    pub(crate) fn member_identity(&self, tx: &Tx, user: &UserUri) -> Result<Identity, MlsError> {
        let client = user.puppet_client().to_string();
        let record = self
            .client_record(tx, user)?
            .ok_or_else(|| MlsError::Malformed(format!("no client for {user}")))?;
        let provider = self.provider(tx, &client);
        let signer = SignatureKeyPair::read(
            provider.storage(),
            &record.public_key,
            CIPHERSUITE.signature_algorithm(),
        )
        .ok_or_else(|| MlsError::Malformed(format!("signature key of {user} missing")))?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(client.into_bytes()).into(),
            signature_key: signer.public().into(),
        };
        Ok(Identity { signer, credential })
    }

    /// The openmls provider of `user`'s puppet.
    pub(crate) fn client_provider(&self, tx: &Tx, user: &UserUri) -> Provider<'_> {
        self.provider(tx, &user.puppet_client().to_string())
    }

    /// Creates `user`'s puppet client (signature key, no KeyPackage yet) unless it exists, and
    /// returns its URI.
    pub fn ensure_client(&self, user: &UserUri) -> Result<ClientUri, MlsError> {
        self.transaction(|tx| {
            self.client_identity(tx, user)?;
            Ok(user.puppet_client())
        })
    }

    /// Generates `count` KeyPackages for `user`'s puppet and records them.
    pub fn generate_key_packages(&self, user: &UserUri, count: usize) -> Result<(), MlsError> {
        self.transaction(|tx| self.generate_in(tx, user, count, false).map(drop))
    }

    /// A new KeyPackage of `user`'s puppet made for one use that is known now (this host adding
    /// its own puppet to a room it hosts): recorded as already handed out, so that nobody else
    /// gets it, and no batch is generated for a pool the puppet may never need (a puppet's
    /// unused KeyPackages, with their private keys, are most of what it stores).
    pub fn single_use_key_package(&self, user: &UserUri) -> Result<KeyPackage, MlsError> {
        self.transaction(|tx| {
            self.generate_in(tx, user, 1, true)?
                .pop()
                .ok_or_else(|| MlsError::Malformed("no KeyPackage generated".into()))
        })
    }

    /// Generates `count` KeyPackages, recorded as handed out already when `taken`.
    fn generate_in(
        &self,
        tx: &Tx,
        user: &UserUri,
        count: usize,
        taken: bool,
    ) -> Result<Vec<KeyPackage>, MlsError> {
        let identity = self.client_identity(tx, user)?;
        let provider = self.client_provider(tx, user);
        let mut record = self
            .client_record(tx, user)?
            .ok_or_else(|| MlsError::Malformed("client record vanished".into()))?;
        let mut made = Vec::with_capacity(count);
        for _ in 0..count {
            let bundle = KeyPackage::builder()
                .leaf_node_capabilities(capabilities())
                .key_package_lifetime(Lifetime::new(self.key_packages.lifetime_secs))
                .build(
                    CIPHERSUITE,
                    &provider,
                    &identity.signer,
                    identity.credential.clone(),
                )
                .map_err(|e| mls_err("KeyPackage generation")(&e))?;
            let key_package = bundle.key_package();
            let hash_ref = key_package
                .hash_ref(provider.crypto())
                .map_err(|e| mls_err("KeyPackage reference")(&e))?;
            self.put_record(tx, &key_package_key(hash_ref.as_slice()), &user.to_string())?;
            record.key_packages.push(KeyPackageEntry {
                hash_ref: hash_ref.clone(),
                not_after: key_package.life_time().not_after(),
                taken,
            });
            made.push(key_package.clone());
        }
        self.put_record(tx, &user_key(user), &record)?;
        Ok(made)
    }

    /// Hands out one of `user`'s KeyPackages, never the same one twice and never one that
    /// expires soon, and generates a new batch when few are left. `None` only if generation
    /// produced nothing usable (a zero batch size).
    pub fn take_key_package(&self, user: &UserUri) -> Result<Option<KeyPackage>, MlsError> {
        self.transaction(|tx| {
            self.client_identity(tx, user)?;
            let provider = self.client_provider(tx, user);
            let mut record = self
                .client_record(tx, user)?
                .ok_or_else(|| MlsError::Malformed("client record vanished".into()))?;
            let now = now_secs();
            let deadline = now.saturating_add(self.key_packages.min_remaining_secs);
            // Unused KeyPackages past their use-by date are deleted with their private keys, and
            // so are handed-out ones that expired without a Welcome: nobody may add them now.
            let (stale, kept): (Vec<_>, Vec<_>) = record.key_packages.into_iter().partition(|e| {
                if e.taken {
                    e.not_after < now
                } else {
                    e.not_after < deadline
                }
            });
            record.key_packages = kept;
            for entry in stale {
                provider.storage().delete_key_package(&entry.hash_ref)?;
                self.delete_record(tx, &key_package_key(entry.hash_ref.as_slice()));
            }
            let fresh = |r: &ClientRecord| r.key_packages.iter().filter(|e| !e.taken).count();
            if fresh(&record) <= self.key_packages.low_water {
                self.put_record(tx, &user_key(user), &record)?;
                self.generate_in(tx, user, self.key_packages.batch, false)?;
                record = self
                    .client_record(tx, user)?
                    .ok_or_else(|| MlsError::Malformed("client record vanished".into()))?;
            }
            let Some(entry) = record.key_packages.iter_mut().find(|e| !e.taken) else {
                return Ok(None);
            };
            entry.taken = true;
            let bundle: Option<KeyPackageBundle> =
                provider.storage().key_package(&entry.hash_ref)?;
            let bundle = bundle.ok_or_else(|| {
                MlsError::Malformed(format!("KeyPackage of {user} missing from the store"))
            })?;
            self.put_record(tx, &user_key(user), &record)?;
            Ok(Some(bundle.key_package().clone()))
        })
    }

    /// How many of `user`'s KeyPackages are still unused.
    pub fn unused_key_packages(&self, user: &UserUri) -> Result<usize, MlsError> {
        self.transaction(|tx| {
            Ok(self
                .client_record(tx, user)?
                .map(|r| r.key_packages.iter().filter(|e| !e.taken).count())
                .unwrap_or(0))
        })
    }

    /// The puppet whose KeyPackage has reference `hash_ref` (to route a Welcome).
    pub fn key_package_owner(&self, hash_ref: &KeyPackageRef) -> Result<Option<UserUri>, MlsError> {
        self.transaction(|tx| self.key_package_owner_in(tx, hash_ref))
    }

    pub(crate) fn key_package_owner_in(
        &self,
        tx: &Tx,
        hash_ref: &KeyPackageRef,
    ) -> Result<Option<UserUri>, MlsError> {
        let user: Option<String> = self.get_record(tx, &key_package_key(hash_ref.as_slice()))?;
        user.map(|u| {
            UserUri::parse(&u).map_err(|e| MlsError::Malformed(format!("stored user URI: {e}")))
        })
        .transpose()
    }

    /// Forgets a KeyPackage a Welcome consumed.
    pub(crate) fn key_package_used(
        &self,
        tx: &Tx,
        user: &UserUri,
        hash_ref: &KeyPackageRef,
    ) -> Result<(), MlsError> {
        self.delete_record(tx, &key_package_key(hash_ref.as_slice()));
        if let Some(mut record) = self.client_record(tx, user)? {
            record.key_packages.retain(|e| e.hash_ref != *hash_ref);
            self.put_record(tx, &user_key(user), &record)?;
        }
        Ok(())
    }
}

impl MlsHost {
    /// The credential identity (a client URI for MIMI clients) of a KeyPackage's leaf.
    pub fn key_package_identity(key_package: &KeyPackage) -> String {
        super::rooms::identity_of(key_package.leaf_node().credential())
    }

    /// Parses and verifies a KeyPackage received from the network: a bare `KeyPackage` or one
    /// wrapped in an `MLSMessage` (signature, lifetime, ciphersuite, protocol version).
    pub fn validate_key_package(&self, bytes: &[u8]) -> Result<KeyPackage, MlsError> {
        use tls_codec::Deserialize as _;
        let key_package_in = match MlsMessageIn::tls_deserialize_exact(bytes) {
            Ok(message) => match message.extract() {
                MlsMessageBodyIn::KeyPackage(kp) => kp,
                _ => {
                    return Err(MlsError::Malformed(
                        "an MLSMessage but not a KeyPackage".into(),
                    ));
                }
            },
            Err(_) => KeyPackageIn::tls_deserialize_exact(bytes)
                .map_err(|e| MlsError::Malformed(format!("KeyPackage: {e}")))?,
        };
        key_package_in
            .validate(&self.crypto, ProtocolVersion::Mls10)
            .map_err(|e| MlsError::Malformed(format!("KeyPackage: {e}")))
    }
}
