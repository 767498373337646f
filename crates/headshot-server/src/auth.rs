//! API keys, compared in constant time so response timing does not leak key prefixes, and the
//! tenancy they imply: a job belongs to the key that submitted it. Records keep a keyed
//! fingerprint of that key (HMAC-SHA256 under a secret the job store keeps), never the key.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
    open: bool,
    fingerprint_secret: Vec<u8>,
}

/// Who an accepted request comes from: the fingerprint of its key (`None` with `--no-auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    owner: Option<String>,
}

impl Caller {
    /// The fingerprint to store as the owner of a job this caller submits.
    pub fn owner(&self) -> Option<String> {
        self.owner.clone()
    }

    /// Whether a record owned by `owner` is this caller's. Records without an owner (written
    /// without keys, or by a version before keys were scoped) are readable by any caller.
    pub fn may_read(&self, owner: Option<&str>) -> bool {
        match (owner, &self.owner) {
            (None, _) => true,
            (Some(owner), Some(mine)) => bool::from(owner.as_bytes().ct_eq(mine.as_bytes())),
            (Some(_), None) => false,
        }
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys, open: {})", self.keys.len(), self.open)
    }
}

impl ApiKeys {
    /// `open`: accept any request (`--no-auth`). Empty keys are ignored.
    pub fn new(keys: &[String], open: bool) -> Self {
        let keys = keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .map(|k| k.as_bytes().to_vec())
            .collect();
        ApiKeys {
            keys,
            open,
            fingerprint_secret: Vec::new(),
        }
    }

    /// The secret job owners are fingerprinted with (the same for every server sharing a
    /// job store, so each can tell whose a record is).
    pub fn with_fingerprint_secret(mut self, secret: Vec<u8>) -> Self {
        self.fingerprint_secret = secret;
        self
    }

    /// The caller behind `candidate`, if it is one of the keys (see [`ApiKeys::accepts`]).
    pub fn authenticate(&self, candidate: Option<&str>) -> Option<Caller> {
        if !self.accepts(candidate) {
            return None;
        }
        let owner = if self.open {
            None
        } else {
            candidate.map(|key| self.fingerprint(key.trim()))
        };
        Some(Caller { owner })
    }

    /// Hex HMAC-SHA256 of `key` under the fingerprint secret.
    fn fingerprint(&self, key: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.fingerprint_secret)
            .expect("HMAC takes keys of any size");
        mac.update(key.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn is_configured(&self) -> bool {
        self.open || !self.keys.is_empty()
    }

    /// Whether `candidate` is one of the keys. Every configured key is compared (no early exit),
    /// and `ct_eq` itself is constant time for equal lengths.
    pub fn accepts(&self, candidate: Option<&str>) -> bool {
        if self.open {
            return true;
        }
        let Some(candidate) = candidate.map(str::trim).filter(|c| !c.is_empty()) else {
            return false;
        };
        let candidate = candidate.as_bytes();
        let mut found = subtle::Choice::from(0u8);
        for key in &self.keys {
            found |= key.as_slice().ct_eq(candidate);
        }
        found.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys() {
        let keys = ApiKeys::new(&["alpha".into(), " beta ".into(), "".into()], false);
        assert!(keys.accepts(Some("alpha")));
        assert!(keys.accepts(Some("beta")));
        assert!(!keys.accepts(Some("alph")));
        assert!(!keys.accepts(Some("alphax")));
        assert!(!keys.accepts(Some("")));
        assert!(!keys.accepts(None));
        assert!(keys.is_configured());
        assert!(!ApiKeys::new(&[], false).is_configured());
        assert!(ApiKeys::new(&[], true).accepts(None));
    }

    #[test]
    fn callers_read_only_their_own_records() {
        let keys = ApiKeys::new(&["alpha".into(), "beta".into()], false)
            .with_fingerprint_secret(b"secret".to_vec());
        let alpha = keys.authenticate(Some("alpha")).unwrap();
        let beta = keys.authenticate(Some(" beta")).unwrap();
        assert!(keys.authenticate(Some("gamma")).is_none());
        let owner = alpha.owner().unwrap();
        assert_eq!(owner.len(), 64);
        assert!(!owner.contains("alpha"), "the key itself is never stored");
        assert!(alpha.may_read(Some(&owner)));
        assert!(!beta.may_read(Some(&owner)));
        assert!(beta.may_read(None));
        // Another secret gives other fingerprints (they are keyed, not plain hashes).
        let other = ApiKeys::new(&["alpha".into()], false).with_fingerprint_secret(b"x".to_vec());
        assert_ne!(
            other.authenticate(Some("alpha")).unwrap().owner(),
            Some(owner)
        );
        // Without keys nothing is scoped.
        let open = ApiKeys::new(&[], true).authenticate(Some("any")).unwrap();
        assert_eq!(open.owner(), None);
    }
}
