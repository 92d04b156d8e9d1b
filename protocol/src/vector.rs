//! `F32Vec`: a vector of `f32` that travels as raw little-endian bytes (and the codec it shares
//! with secure aggregation's `U32Vec`).
//!
//! A serde sequence of floats costs a length-prefixed varint per element in bincode and is several
//! times slower to encode than copying bytes; parameter vectors are the bulk of every message.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A dense `f32` vector encoded on the wire as little-endian bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct F32Vec(pub Vec<f32>);

impl F32Vec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the vector has no elements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The elements.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Whether every element is finite (no NaN, no infinity).
    pub fn all_finite(&self) -> bool {
        self.largest_magnitude().is_some()
    }

    /// The largest `|value|` (see [`largest_magnitude`]).
    pub fn largest_magnitude(&self) -> Option<f32> {
        largest_magnitude(&self.0)
    }
}

/// Runs a loop compiled twice: for the CPU the build targets (on x86-64, SSE2 only) and with
/// AVX2, which is used when this CPU has it (`is_x86_feature_detected!` caches the answer).
///
/// The workspace builds for the baseline x86-64 so that one binary runs anywhere, and SSE2 has
/// no unsigned 32-bit maximum and two `f64` lanes: on the development machine
/// [`largest_magnitude`] ran 4-5x and [`sum_of_squares`] 1.4x slower than with AVX2, and the
/// coordinator's exact sum gained a third. Both copies are the same Rust, compiled without
/// floating-point contraction, so they give the same bits; `$portable` is the baseline copy,
/// `$avx2` the name of the AVX2 one.
#[macro_export]
macro_rules! avx2_or_portable {
    ($(#[$meta:meta])* $vis:vis fn $name:ident / $portable:ident / $avx2:ident
        ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: this CPU has AVX2, checked just above.
                return unsafe { $avx2($($arg),*) };
            }
            $portable($($arg),*)
        }

        #[inline(always)]
        fn $portable($($arg: $ty),*) $(-> $ret)? $body

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2($($arg: $ty),*) $(-> $ret)? {
            $portable($($arg),*)
        }
    };
}

avx2_or_portable! {
    /// The largest `|value|` of `values` (0 for none), or `None` when one is NaN or infinite.
    ///
    /// One pass the compiler vectorises, without a branch per element: a float's bits without
    /// the sign order like its magnitude, and NaN and the infinities sort above every finite
    /// value, so the largest such bits answer both questions.
    pub fn largest_magnitude / largest_magnitude_portable / largest_magnitude_avx2
        (values: &[f32]) -> Option<f32> {
        const MAGNITUDE: u32 = 0x7fff_ffff;
        const INFINITY: u32 = 0x7f80_0000;
        let largest = values
            .iter()
            .map(|v| v.to_bits() & MAGNITUDE)
            .max()
            .unwrap_or(0);
        (largest < INFINITY).then(|| f32::from_bits(largest))
    }
}

/// Lanes of [`sum_of_squares`]: independent partial sums the compiler keeps in vector registers.
const SQUARE_LANES: usize = 8;

avx2_or_portable! {
    /// `sum(v * v)` over `values`, in `f64`, in a fixed order: value `i` goes to partial sum
    /// `i % 8`, and the partial sums are added last, lane 0 first. A single running sum would
    /// be one long chain of dependent additions (the compiler may not reorder floating-point
    /// sums); eight lanes vectorise, and the result is still a pure function of `values`.
    pub fn sum_of_squares / sum_of_squares_portable / sum_of_squares_avx2
        (values: &[f32]) -> f64 {
        let mut lanes = [0.0f64; SQUARE_LANES];
        let chunks = values.chunks_exact(SQUARE_LANES);
        let rest = chunks.remainder();
        for chunk in chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += f64::from(v) * f64::from(v);
            }
        }
        for (lane, &v) in lanes.iter_mut().zip(rest) {
            *lane += f64::from(v) * f64::from(v);
        }
        lanes.iter().sum()
    }
}

impl From<Vec<f32>> for F32Vec {
    fn from(values: Vec<f32>) -> Self {
        Self(values)
    }
}

impl Serialize for F32Vec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_le_words(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for F32Vec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_le_words(deserializer, "f32").map(Self)
    }
}

/// A 4-byte number that travels as its little-endian bytes (`f32`, `u32`).
pub(crate) trait Word: bytemuck::Pod {
    /// `self` with its bytes swapped from little-endian to native order (a no-op on
    /// little-endian machines) and back.
    fn swap_le(self) -> Self;
}

impl Word for f32 {
    fn swap_le(self) -> Self {
        f32::from_bits(u32::from_le(self.to_bits()))
    }
}

impl Word for u32 {
    fn swap_le(self) -> Self {
        u32::from_le(self)
    }
}

/// Writes `words` as one byte string of their little-endian bytes: on a little-endian machine
/// their memory as it is, without a copy.
pub(crate) fn serialize_le_words<T: Word, S: Serializer>(
    words: &[T],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if cfg!(target_endian = "little") {
        serializer.serialize_bytes(bytemuck::cast_slice(words))
    } else {
        let bytes: Vec<u8> = words
            .iter()
            .flat_map(|w| bytemuck::bytes_of(&w.swap_le()).to_vec())
            .collect();
        serializer.serialize_bytes(&bytes)
    }
}

/// Reads what [`serialize_le_words`] wrote (`kind` names the type in errors). Asking for
/// borrowed bytes lets a decoder that holds the whole input (bincode from a slice) lend them,
/// so they are copied once, into the words, with no intermediate buffer.
pub(crate) fn deserialize_le_words<'de, T: Word, D: Deserializer<'de>>(
    deserializer: D,
    kind: &'static str,
) -> Result<Vec<T>, D::Error> {
    deserializer.deserialize_bytes(WordsVisitor {
        kind,
        words: std::marker::PhantomData,
    })
}

fn words_from_le_bytes<T: Word, E: serde::de::Error>(
    bytes: &[u8],
    kind: &str,
) -> Result<Vec<T>, E> {
    if !bytes.len().is_multiple_of(4) {
        return Err(E::custom(format!(
            "{kind} vector has {} bytes, not a multiple of 4",
            bytes.len()
        )));
    }
    // Filled as it is allocated, without zeroing it first.
    let mut words = Vec::with_capacity(bytes.len() / 4);
    words.extend(
        bytes
            .chunks_exact(4)
            .map(|chunk| bytemuck::pod_read_unaligned::<T>(chunk).swap_le()),
    );
    Ok(words)
}

struct WordsVisitor<T> {
    kind: &'static str,
    words: std::marker::PhantomData<T>,
}

impl<'de, T: Word> Visitor<'de> for WordsVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "the little-endian bytes of {} values", self.kind)
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<T>, E> {
        words_from_le_bytes(bytes, self.kind)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // Self-describing formats (JSON) write bytes as a sequence of numbers.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        words_from_le_bytes(&bytes, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_of_squares_sees_every_element_in_its_lane() {
        assert_eq!(sum_of_squares(&[]), 0.0);
        // Lengths around the lane count: every element counts, the tail included.
        for n in [1usize, 7, 8, 9, 17, 100] {
            let values: Vec<f32> = (1..=n).map(|i| i as f32).collect();
            let exact = (n * (n + 1) * (2 * n + 1) / 6) as f64;
            assert_eq!(sum_of_squares(&values), exact, "n = {n}");
        }
        // Against one running sum: the same number up to rounding.
        let values: Vec<f32> = (0..1001)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
            .collect();
        let running: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        assert!((sum_of_squares(&values) - running).abs() <= running * 1e-12);
    }

    #[test]
    fn the_largest_magnitude_sees_every_element() {
        assert_eq!(F32Vec::default().largest_magnitude(), Some(0.0));
        assert_eq!(F32Vec(vec![0.5, -3.0, 2.0]).largest_magnitude(), Some(3.0));
        assert_eq!(F32Vec(vec![-0.0, -1e-40]).largest_magnitude(), Some(1e-40));
        assert_eq!(
            F32Vec(vec![f32::MAX, 1.0]).largest_magnitude(),
            Some(f32::MAX)
        );
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut values = vec![1.0; 37];
            values[29] = bad;
            assert_eq!(F32Vec(values).largest_magnitude(), None, "{bad}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx2_copies_give_the_baseline_copies_bits() {
        use rand::{Rng, SeedableRng};
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for n in [0usize, 1, 7, 8, 9, 31, 33, 1000, 4099] {
            let mut values: Vec<f32> = (0..n)
                .map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-30..30)))
                .collect();
            // SAFETY: AVX2 is present (checked above).
            let (largest, squares) = unsafe {
                (
                    largest_magnitude_avx2(&values),
                    sum_of_squares_avx2(&values),
                )
            };
            assert_eq!(largest, largest_magnitude_portable(&values), "n = {n}");
            assert_eq!(
                squares.to_bits(),
                sum_of_squares_portable(&values).to_bits()
            );
            if n > 0 {
                values[n / 2] = f32::NAN;
                // SAFETY: as above.
                assert_eq!(unsafe { largest_magnitude_avx2(&values) }, None);
            }
        }
    }

    #[test]
    fn floats_travel_as_their_little_endian_bytes() {
        let values = F32Vec(vec![1.0, -2.5, f32::MIN_POSITIVE, 3.0e38]);
        let limits = crate::codec::MessageLimits::CONTROL;
        let encoded = crate::codec::encode_message(&values, &limits).unwrap();
        let expected: Vec<u8> = values.0.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(
            encoded.windows(expected.len()).any(|w| w == expected),
            "the bytes are not in the encoding"
        );
        let decoded: F32Vec = crate::codec::decode_message(&encoded, &limits).unwrap();
        assert_eq!(decoded, values);
        let json = serde_json::to_string(&values).unwrap();
        assert_eq!(serde_json::from_str::<F32Vec>(&json).unwrap(), values);
    }
}
