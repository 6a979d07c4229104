//! The pre-queue's draw, recomputed as anyone can: the room published the
//! SHA-256 of its seed before the start and reveals the seed from it; its
//! buyers who joined before the start are ordered by ascending SHA-1 of
//! `seed:userId`. Each such buyer notes its first place after the start
//! (admission held meanwhile), and the places must come in that order.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// What the check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Draw {
    /// Buyers who joined before the start.
    pub pre_queue: u64,
    /// ... of whom this many noted a place after it (the others walked away).
    pub placed: usize,
    /// Sorted by place, their SHA-1(seed:userId) ascend, and no two share a place.
    pub in_order: bool,
    /// SHA-256 of the revealed seed is the commitment published before the start.
    pub commitment_kept: bool,
    pub seed: Option<String>,
    /// The first pair out of order, if any: "user (place) before user (place)".
    pub first_break: Option<String>,
}

pub fn check(pre_queue: u64, places: &[(i64, u64)], commitment: &str, seed: Option<&str>) -> Draw {
    let Some(seed) = seed else {
        return Draw {
            pre_queue,
            placed: places.len(),
            in_order: false,
            commitment_kept: false,
            seed: None,
            first_break: Some("the seed was not revealed".into()),
        };
    };
    let mut by_place = places.to_vec();
    by_place.sort_by_key(|&(_, place)| place);
    let keyed: Vec<(String, i64, u64)> = by_place
        .iter()
        .map(|&(user, place)| (sha1_hex(&format!("{seed}:{user}")), user, place))
        .collect();
    let first_break = keyed
        .windows(2)
        .find(|w| w[0].0 >= w[1].0 || w[0].2 == w[1].2)
        .map(|w| format!("{} ({}) before {} ({})", w[0].1, w[0].2, w[1].1, w[1].2));
    Draw {
        pre_queue,
        placed: places.len(),
        in_order: first_break.is_none(),
        commitment_kept: hex(&Sha256::digest(seed.as_bytes())) == commitment,
        seed: Some(seed.to_string()),
        first_break,
    }
}

/// SHA-1 (of the `sha-1` crate, another `digest` generation than `sha2`'s), hex.
fn sha1_hex(text: &str) -> String {
    use sha1::Digest as _;
    hex(&sha1::Sha1::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_in_the_seeds_order_pass_and_any_swap_fails() {
        let seed = "0123456789abcdef0123456789abcdef";
        let commitment = hex(&Sha256::digest(seed.as_bytes()));
        let mut users: Vec<i64> = (1..=50).collect();
        users.sort_by_key(|u| sha1_hex(&format!("{seed}:{u}")));
        // Places with gaps (buyers who walked away hold theirs unnoted).
        let places: Vec<(i64, u64)> = users
            .iter()
            .enumerate()
            .map(|(i, &u)| (u, 3 * i as u64 + 1))
            .collect();
        let draw = check(60, &places, &commitment, Some(seed));
        assert!(draw.in_order && draw.commitment_kept, "{draw:?}");
        assert_eq!((draw.pre_queue, draw.placed), (60, 50));

        let mut swapped = places.clone();
        (swapped[10].1, swapped[11].1) = (swapped[11].1, swapped[10].1);
        let draw = check(60, &swapped, &commitment, Some(seed));
        assert!(!draw.in_order);
        assert!(draw.first_break.is_some());
        assert!(!check(60, &places, "0".repeat(64).as_str(), Some(seed)).commitment_kept);
        assert!(!check(60, &places, &commitment, None).in_order);
    }
}
