//! t-of-n Shamir secret sharing of 32-byte secrets over GF(256), via the `blahaj` crate (the
//! maintained fork of `sharks`; byte-wise polynomials, x-coordinates 1..=255).
//!
//! A share travels as `[x, y_0, ..., y_31]` (33 bytes). This wrapper adds what the crate leaves to
//! its caller: shares are dealt to chosen x-coordinates (a peer's roster position + 1), and
//! recombination refuses share sets with a zero or repeated x-coordinate or a wrong length
//! instead of interpolating garbage. Shamir shares carry no integrity: a wrong share gives a
//! wrong secret, which the callers detect by checking the result against a commitment or a
//! public key.
//!
//! Protects: fewer than `t` shares reveal nothing about a secret (information-theoretically).
//! Does not protect: against wrong shares (no verifiable secret sharing: detection only, see
//! above), or timing side channels of the crate's table-based GF(256) arithmetic; at most 255
//! shares per secret.

use blahaj::{Share, Sharks};
use chacha20::ChaCha20Rng;
use zeroize::Zeroizing;

/// Bytes of one share of a 32-byte secret.
pub(crate) const SHARE_LEN: usize = 33;

/// Why a set of shares cannot be combined.
#[derive(Debug, PartialEq)]
pub(crate) enum CombineError {
    TooFew { have: usize, threshold: usize },
    Malformed(String),
}

/// Shares of `secret` for the x-coordinates `1..=count`; element `k` is the share for `x = k + 1`.
pub(crate) fn split(
    secret: &[u8; 32],
    threshold: usize,
    count: usize,
    rng: &mut ChaCha20Rng,
) -> Vec<Zeroizing<Vec<u8>>> {
    debug_assert!((1..=255).contains(&threshold) && count <= 255);
    Sharks(threshold as u8)
        .dealer_rng(secret, rng)
        .take(count)
        .map(|share| Zeroizing::new(Vec::from(&share)))
        .collect()
}

/// Checks an encoded share's length and x-coordinate.
pub(crate) fn check_share(share: &[u8], expected_x: u8) -> Result<(), String> {
    if share.len() != SHARE_LEN {
        return Err(format!(
            "a share has {} bytes, expected {SHARE_LEN}",
            share.len()
        ));
    }
    if share[0] != expected_x {
        return Err(format!(
            "share x-coordinate is {}, expected {expected_x}",
            share[0]
        ));
    }
    Ok(())
}

/// The secret from the first `threshold` shares (by x-coordinate). Shares must have distinct,
/// non-zero x-coordinates and the right length.
pub(crate) fn combine(
    shares: &[&[u8]],
    threshold: usize,
) -> Result<Zeroizing<[u8; 32]>, CombineError> {
    if shares.len() < threshold {
        return Err(CombineError::TooFew {
            have: shares.len(),
            threshold,
        });
    }
    let mut sorted: Vec<&[u8]> = shares.to_vec();
    sorted.sort_by_key(|s| s.first().copied());
    for pair in sorted.windows(2) {
        if pair[0].first() == pair[1].first() {
            return Err(CombineError::Malformed(format!(
                "two shares have x-coordinate {:?}",
                pair[0].first()
            )));
        }
    }
    let mut parsed = Vec::with_capacity(threshold);
    for share in sorted.into_iter().take(threshold) {
        if share.len() != SHARE_LEN || share[0] == 0 {
            return Err(CombineError::Malformed(format!(
                "a share of {} bytes with x-coordinate {:?}",
                share.len(),
                share.first()
            )));
        }
        parsed.push(Share::try_from(share).map_err(|e| CombineError::Malformed(e.to_string()))?);
    }
    let secret = Sharks(threshold as u8)
        .recover(parsed.iter())
        .map_err(|e| CombineError::Malformed(e.to_string()))?;
    let secret = Zeroizing::new(secret);
    let mut out = Zeroizing::new([0u8; 32]);
    if secret.len() != 32 {
        return Err(CombineError::Malformed(format!(
            "recovered {} bytes",
            secret.len()
        )));
    }
    out.copy_from_slice(&secret);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::rand_core::SeedableRng;

    #[test]
    fn any_threshold_subset_recovers_and_fewer_do_not() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let secret: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let shares = split(&secret, 3, 5, &mut rng);
        assert_eq!(shares.len(), 5);
        for (k, share) in shares.iter().enumerate() {
            check_share(share, k as u8 + 1).unwrap();
        }
        for subset in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
            let picked: Vec<&[u8]> = subset.iter().map(|&i| shares[i].as_slice()).collect();
            assert_eq!(*combine(&picked, 3).unwrap(), secret);
        }
        let two: Vec<&[u8]> = shares[..2].iter().map(|s| s.as_slice()).collect();
        assert_eq!(
            combine(&two, 3).unwrap_err(),
            CombineError::TooFew {
                have: 2,
                threshold: 3
            }
        );
        // Two shares of the same x must not be counted as two.
        let dup: Vec<&[u8]> = vec![&shares[0], &shares[0], &shares[1]];
        assert!(matches!(combine(&dup, 3), Err(CombineError::Malformed(_))));
    }

    #[test]
    fn a_wrong_share_changes_the_secret() {
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let secret = [9u8; 32];
        let shares = split(&secret, 2, 3, &mut rng);
        let mut bad = shares[1].to_vec();
        bad[5] ^= 1;
        let picked: Vec<&[u8]> = vec![&shares[0], &bad];
        assert_ne!(*combine(&picked, 2).unwrap(), secret);
    }
}
