//! The digest algorithms a hash can be finished with, behind one small interface.

use std::fmt;
use std::str::FromStr;

use md5::Digest as _;
use xxhash_rust::xxh3::Xxh3;

use super::HashError;

/// A digest algorithm accepted by `hash_name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// xxh3-128: the default, tens of GB/s.
    Xxh3,
    /// MD5, joblib's default; accepted for compatibility.
    Md5,
    /// SHA-1, accepted by joblib too.
    Sha1,
}

impl Algorithm {
    /// Every accepted name, in the order error messages list them.
    pub const NAMES: [&'static str; 3] = ["xxh3", "md5", "sha1"];

    /// Length of the digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Xxh3 | Self::Md5 => 16,
            Self::Sha1 => 20,
        }
    }

    /// Digests `data` in one call.
    pub fn digest(self, data: &[u8]) -> Digest {
        match self {
            Self::Xxh3 => Digest::new(&xxhash_rust::xxh3::xxh3_128(data).to_le_bytes()),
            Self::Md5 => Digest::new(&md5::Md5::digest(data)),
            Self::Sha1 => Digest::new(&sha1::Sha1::digest(data)),
        }
    }

    /// A streaming state for data that arrives in pieces.
    pub fn stream(self) -> Stream {
        match self {
            Self::Xxh3 => Stream::Xxh3(Box::new(Xxh3::new())),
            Self::Md5 => Stream::Md5(md5::Md5::new()),
            Self::Sha1 => Stream::Sha1(sha1::Sha1::new()),
        }
    }
}

impl FromStr for Algorithm {
    type Err = HashError;

    fn from_str(name: &str) -> Result<Self, HashError> {
        match name {
            "xxh3" => Ok(Self::Xxh3),
            "md5" => Ok(Self::Md5),
            "sha1" => Ok(Self::Sha1),
            other => Err(HashError::UnknownAlgorithm(other.to_owned())),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Xxh3 => "xxh3",
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
        })
    }
}

/// A finished digest of at most 20 bytes, stored inline (no allocation per entry).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    len: u8,
    bytes: [u8; 20],
}

impl Digest {
    fn new(src: &[u8]) -> Self {
        let mut bytes = [0u8; 20];
        let n = src.len().min(20);
        bytes[..n].copy_from_slice(&src[..n]);
        Self {
            len: n as u8,
            bytes,
        }
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Lower-case hexadecimal, as `hashlib`'s `hexdigest()`.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(self.as_bytes().len() * 2);
        for &b in self.as_bytes() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// Streaming digest state.
pub enum Stream {
    /// xxh3-128 (boxed: its state is large).
    Xxh3(Box<Xxh3>),
    /// MD5.
    Md5(md5::Md5),
    /// SHA-1.
    Sha1(sha1::Sha1),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stream(..)")
    }
}

impl Stream {
    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Xxh3(s) => s.update(data),
            Self::Md5(s) => s.update(data),
            Self::Sha1(s) => s.update(data),
        }
    }

    /// Finishes the digest.
    pub fn finish(self) -> Digest {
        match self {
            Self::Xxh3(s) => Digest::new(&s.digest128().to_le_bytes()),
            Self::Md5(s) => Digest::new(&s.finalize()),
            Self::Sha1(s) => Digest::new(&s.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            Algorithm::Md5.digest(b"abc").to_hex(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            Algorithm::Sha1.digest(b"abc").to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(Algorithm::Xxh3.digest(b"").as_bytes().len(), 16);
    }

    #[test]
    fn stream_equals_oneshot() {
        for algo in [Algorithm::Xxh3, Algorithm::Md5, Algorithm::Sha1] {
            let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
            let mut s = algo.stream();
            for piece in data.chunks(333) {
                s.update(piece);
            }
            assert_eq!(s.finish(), algo.digest(&data), "{algo}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_is_an_error() {
        for name in Algorithm::NAMES {
            assert_eq!(name.parse::<Algorithm>().expect("known").to_string(), name);
        }
        assert!(
            matches!("sha256".parse::<Algorithm>(), Err(HashError::UnknownAlgorithm(n)) if n == "sha256")
        );
    }
}
