//! The operator: who may change a waiting room at run time (pause, resume,
//! admission rate, maximum active buyers). Proven by a bearer secret from
//! `HERDGATE_OPERATOR_TOKEN`, at least 32 bytes; unset, the operator API is
//! off and every operator call is 403 `operator-api-off`.
//!
//! The secret is kept as its SHA-256 and a presented token is hashed before a
//! constant-time comparison: how long a check takes says nothing about the
//! secret, not even its length. Buyers' tokens (signed JWTs, `auth`) are never
//! accepted here, and the operator's secret is never a buyer's token.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The operator's secret, as its digest; `None` when the operator API is off.
pub struct OperatorKey {
    digest: Option<[u8; 32]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    #[error("the operator API is off: start the gateway with HERDGATE_OPERATOR_TOKEN set")]
    Off,
    #[error("an operator call needs Authorization: Bearer <the operator token>")]
    BadToken,
}

impl OperatorKey {
    pub fn new(secret: Option<&SecretString>) -> Self {
        OperatorKey {
            digest: secret.map(|s| Sha256::digest(s.expose_secret().as_bytes()).into()),
        }
    }

    /// Whether `presented` (the bearer token of the request, if any) is the
    /// operator's secret.
    pub fn check(&self, presented: Option<&str>) -> Result<(), OperatorError> {
        let digest = self.digest.as_ref().ok_or(OperatorError::Off)?;
        let presented = presented.ok_or(OperatorError::BadToken)?;
        let candidate: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        match bool::from(candidate.ct_eq(digest)) {
            true => Ok(()),
            false => Err(OperatorError::BadToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_itself_passes_and_an_unset_secret_turns_the_api_off() {
        let secret = SecretString::from("s".repeat(40));
        let key = OperatorKey::new(Some(&secret));
        assert_eq!(key.check(Some(&"s".repeat(40))), Ok(()));
        for wrong in ["", "s", &"s".repeat(39), &"s".repeat(41), &"t".repeat(40)] {
            assert_eq!(
                key.check(Some(wrong)),
                Err(OperatorError::BadToken),
                "{wrong}"
            );
        }
        assert_eq!(key.check(None), Err(OperatorError::BadToken));
        let off = OperatorKey::new(None);
        assert_eq!(off.check(Some(&"s".repeat(40))), Err(OperatorError::Off));
        assert_eq!(off.check(None), Err(OperatorError::Off));
    }
}
