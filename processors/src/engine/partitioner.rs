//! Kafka's default partitioner for keyed records (`Utils.murmur2`, positive, modulo the
//! partition count), the same as Java clients and librdkafka's `murmur2_random`: where a
//! key lands, and so which task owns it.

/// Kafka's murmur2 hash of `data` (seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by Kafka 4.4.0's own `Utils.murmur2` / `toPositive(..) % 6`.
    #[test]
    fn matches_kafkas_java_implementation() {
        let cases: [(&str, i32, i32); 7] = [
            ("21", -973932308, 0),
            ("foobar", -790332482, 0),
            ("a-little-bit-long-string", -985981536, 2),
            ("abc", 479470107, 3),
            ("6f1c1f8e-3c1a-4f57-9a0e-0d7f3b1c2a11", 892193245, 1),
            ("SKU-0001", -1798259006, 0),
            ("", 275646681, 3),
        ];
        for (key, hash, p6) in cases {
            assert_eq!(murmur2(key.as_bytes()), hash, "{key}");
            assert_eq!(partition_for(key.as_bytes(), 6), p6, "{key}");
        }
    }
}
