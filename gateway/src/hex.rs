//! Lower-case hex, the one text form of the gateway's random identifiers (session ids, ticket
//! ids, binding nonces) and digests (cookie names, labels, bindings).

use rand::RngCore as _;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex. Runs on the request path (cookie names), so no per-byte
/// formatting.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// True when `text` is nothing but hex digits (any case), between 1 and `max` of them: what an
/// identifier of ours may be when it comes back from a client.
pub fn is_hex(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `N` random bytes from the thread's CSPRNG, as hex.
pub fn random<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    encode(&bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_like_format() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::encode(&bytes), expected);
        assert_eq!(super::random::<16>().len(), 32);
    }
}
