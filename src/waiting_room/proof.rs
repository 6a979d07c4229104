//! Proof of work at the door: for an event that asks for it, a join carries a
//! nonce such that SHA-256 of the user's challenge followed by the nonce starts
//! with the operator's number of zero bits. One hash to check, about 2^bits
//! to find: a bot pays for every account it joins with, a buyer once.

use sha2::{Digest, Sha256};

/// The request header carrying the nonce.
pub const HEADER: &str = "proof-of-work";
/// The longest nonce accepted.
const MAX_NONCE: usize = 64;

/// What the user must hash a nonce after: bound to the event and the user, so
/// a proof cannot be reused for another account or another event.
pub fn challenge(event_id: i64, user_id: i64) -> String {
    format!("herdgate:{event_id}:{user_id}:")
}

/// A nonce is 1 to 64 characters of A-Z a-z 0-9.
pub fn valid_nonce(nonce: &str) -> bool {
    (1..=MAX_NONCE).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `nonce` is a valid nonce proving `bits` zero bits.
pub fn verify(event_id: i64, user_id: i64, nonce: &str, bits: u8) -> bool {
    if !valid_nonce(nonce) {
        return false;
    }
    let mut hash = Sha256::new();
    hash.update(challenge(event_id, user_id).as_bytes());
    hash.update(nonce.as_bytes());
    leading_zero_bits(&hash.finalize()) >= u32::from(bits)
}

fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut zeros = 0;
    for byte in digest {
        zeros += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    zeros
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first nonce (counting up) that proves `bits` for the user.
    fn solve(event_id: i64, user_id: i64, bits: u8) -> String {
        (0u64..)
            .map(|n| n.to_string())
            .find(|nonce| verify(event_id, user_id, nonce, bits))
            .unwrap()
    }

    #[test]
    fn a_solved_nonce_proves_its_bits_for_that_user_and_event_only() {
        let nonce = solve(3, 7, 12);
        assert!(verify(3, 7, &nonce, 12));
        assert!(verify(3, 7, &nonce, 0));
        // Bound to the user and the event: the same nonce rarely proves anything else.
        let reused = (8..40).filter(|user| verify(3, *user, &nonce, 12)).count();
        assert!(reused <= 1, "{reused}");
        assert!(!verify(3, 7, "", 0));
        assert!(!verify(3, 7, "has space", 0));
        assert!(!verify(3, 7, &"1".repeat(65), 0));
    }

    #[test]
    fn zero_bits_are_counted_across_bytes() {
        assert_eq!(leading_zero_bits(&[0, 0, 0x1f, 0xff]), 19);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }
}
