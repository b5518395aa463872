//! Kopia's identifiers. Manifest IDs are 16 random bytes in lower-case hex; content IDs are an
//! optional one-letter prefix (`g`..`z`) and the hex of a keyed hash; object IDs add `I` (one
//! level of indirection each) and `Z` (object-level compression) in front of a content ID.
//! IDs are only compared and passed back, never recomputed, so a reader needs no key.

use std::fmt;
use std::str::FromStr;

/// A manifest's identity. Kept as bytes: the catalog holds several per backup.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManifestId(pub [u8; 16]);

impl fmt::Display for ManifestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl ManifestId {
    /// From the hex text as it comes off the wire.
    pub fn from_hex(text: &[u8]) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        let mut id = [0; 16];
        for (i, pair) in text.chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            id[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(Self(id))
    }
}

impl fmt::Debug for ManifestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestId({self})")
    }
}

impl FromStr for ManifestId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_hex(s.as_bytes()).ok_or_else(|| format!("not a manifest ID: {s:?}"))
    }
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// The hex of `bytes`, lower case.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A content ID in its canonical text form (prefix kept, hash in lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId(Box<str>);

impl ContentId {
    /// The text to send in a `GetContent` request.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The one-letter prefix (`k` directories, `x` indirect indexes), if any.
    pub fn prefix(&self) -> Option<char> {
        let first = self.0.chars().next()?;
        first.is_ascii_lowercase().then_some(first).filter(|c| !c.is_ascii_hexdigit())
    }

    /// Makes the ID of `hash` with an optional prefix.
    pub fn new(prefix: Option<char>, hash: &[u8]) -> Self {
        let mut s = String::with_capacity(1 + hash.len() * 2);
        s.extend(prefix);
        s.push_str(&hex(hash));
        Self(s.into())
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ContentId {
    type Err = String;

    /// An odd length means a prefix, which must be `g`..`z`; the rest is hex of at most 32
    /// bytes. Upper-case hex is accepted and normalised, as Kopia's parser does.
    fn from_str(s: &str) -> Result<Self, String> {
        let (prefix, hash) = if s.len() % 2 == 1 {
            let p = s.chars().next().unwrap_or_default();
            if !('g'..='z').contains(&p) {
                return Err(format!("invalid content prefix in {s:?}"));
            }
            (Some(p), &s[1..])
        } else {
            (None, s)
        };
        if hash.is_empty() || hash.len() > 64 {
            return Err(format!("invalid content hash length in {s:?}"));
        }
        let bytes = hex_bytes(hash).ok_or_else(|| format!("invalid content hash in {s:?}"))?;
        Ok(Self::new(prefix, &bytes))
    }
}

/// An object ID: how to turn contents into the bytes of a file or directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId {
    /// Levels of indirection (`I` prefixes): each means "this content lists the parts".
    pub indirection: u8,
    /// Object-level compression (`Z`), used only by repositories without content compression.
    pub compressed: bool,
    /// The content holding the bytes (or, indirect, the index of the parts).
    pub content: ContentId,
}

impl ObjectId {
    /// A direct object stored in one content.
    pub fn direct(content: ContentId) -> Self {
        Self { indirection: 0, compressed: false, content }
    }

    /// The object this one's index is stored in (one level less of indirection).
    pub fn index(&self) -> Self {
        Self { indirection: self.indirection.saturating_sub(1), ..self.clone() }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for _ in 0..self.indirection {
            f.write_str("I")?;
        }
        if self.compressed {
            f.write_str("Z")?;
        }
        write!(f, "{}", self.content)
    }
}

impl FromStr for ObjectId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.trim_start_matches('I');
        let indirection = u8::try_from(s.len() - rest.len()).map_err(|_| format!("too much indirection in {s:?}"))?;
        let (compressed, rest) = match rest.strip_prefix('Z') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if compressed && indirection > 0 {
            return Err(format!("invalid object ID {s:?}: compression and indirection together"));
        }
        // A legacy marker some old repositories wrote before the content ID.
        let rest = rest.strip_prefix('D').unwrap_or(rest);
        Ok(Self { indirection, compressed, content: rest.parse()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_ids_are_16_bytes_of_hex() {
        let id: ManifestId = "2272afec220f48d0fa0064f85b043ac4".parse().unwrap();
        assert_eq!(id.to_string(), "2272afec220f48d0fa0064f85b043ac4");
        assert_eq!("2272AFEC220F48D0FA0064F85B043AC4".parse::<ManifestId>().unwrap(), id);
        for bad in ["", "2272", "2272afec220f48d0fa0064f85b043ac4ff", "zz72afec220f48d0fa0064f85b043ac4"] {
            assert!(bad.parse::<ManifestId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn content_ids_follow_kopias_grammar() {
        let k: ContentId = "k6428641bcf1bc68c7b1a20306c522428".parse().unwrap();
        assert_eq!((k.prefix(), k.as_str()), (Some('k'), "k6428641bcf1bc68c7b1a20306c522428"));
        let plain: ContentId = "8B2AE950C74C0668C2DB579B831AA0F9".parse().unwrap();
        assert_eq!((plain.prefix(), plain.as_str()), (None, "8b2ae950c74c0668c2db579b831aa0f9"));
        for bad in ["", "k", "a6428641bcf1bc68c7b1a20306c522428", "kxyz", "123", &"ab".repeat(33)] {
            assert!(bad.parse::<ContentId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn object_ids_carry_indirection_and_compression() {
        let o: ObjectId = "IIx1f2e3d4c5b6a79880716253443526170".parse().unwrap();
        assert_eq!((o.indirection, o.compressed, o.content.prefix()), (2, false, Some('x')));
        assert_eq!(o.to_string(), "IIx1f2e3d4c5b6a79880716253443526170");
        assert_eq!(o.index().to_string(), "Ix1f2e3d4c5b6a79880716253443526170");
        let z: ObjectId = "Z8b2ae950c74c0668c2db579b831aa0f9".parse().unwrap();
        assert!(z.compressed && z.indirection == 0);
        let legacy: ObjectId = "D8b2ae950c74c0668c2db579b831aa0f9".parse().unwrap();
        assert_eq!(legacy.to_string(), "8b2ae950c74c0668c2db579b831aa0f9");
        assert!("IZ8b2ae950c74c0668c2db579b831aa0f9".parse::<ObjectId>().is_err());
        assert!("I".parse::<ObjectId>().is_err());
    }
}
