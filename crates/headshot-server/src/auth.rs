//! API keys, compared in constant time so response timing does not leak key prefixes.

use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
    open: bool,
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
        ApiKeys { keys, open }
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
}
