//! The one codec every POZ structure implements.
//!
//! Shaped after rustls' `msgs/codec.rs`: encoding appends to a `Vec<u8>` and
//! cannot fail; decoding reads from a borrowing [`Reader`] that knows its
//! absolute offset in the original input, so every error names the field and
//! the byte where parsing stopped. Every length a peer controls is checked
//! against the bytes actually present *before* anything is allocated.

use thiserror::Error;

/// Why a byte string is not a valid POZ structure.
///
/// `field` is a static path such as `"master_zone.master_keys"`; `offset` is
/// the absolute position in the input where the problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("{field}: truncated at byte {offset} (needed {needed} more bytes)")]
    Truncated {
        field: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("{field}: {extra} trailing bytes at byte {offset}")]
    TrailingBytes {
        field: &'static str,
        offset: usize,
        extra: usize,
    },
    #[error("{field}: invalid value {value:#x} at byte {offset}")]
    InvalidValue {
        field: &'static str,
        offset: usize,
        value: u64,
    },
    #[error("{field}: {count} exceeds the maximum of {max} at byte {offset}")]
    TooMany {
        field: &'static str,
        offset: usize,
        count: u64,
        max: u64,
    },
    #[error("{field}: not in canonical order (must be strictly ascending) at byte {offset}")]
    NotCanonical { field: &'static str, offset: usize },
    #[error("{field}: invalid text at byte {offset} (must be UTF-8 without control characters)")]
    InvalidText { field: &'static str, offset: usize },
    #[error("{field}: {reason} at byte {offset}")]
    Layout {
        field: &'static str,
        offset: usize,
        reason: &'static str,
    },
}

impl DecodeError {
    /// The field path this error names.
    pub fn field(&self) -> &'static str {
        match *self {
            DecodeError::Truncated { field, .. }
            | DecodeError::TrailingBytes { field, .. }
            | DecodeError::InvalidValue { field, .. }
            | DecodeError::TooMany { field, .. }
            | DecodeError::NotCanonical { field, .. }
            | DecodeError::InvalidText { field, .. }
            | DecodeError::Layout { field, .. } => field,
        }
    }

    /// The absolute byte offset where decoding stopped.
    pub fn offset(&self) -> usize {
        match *self {
            DecodeError::Truncated { offset, .. }
            | DecodeError::TrailingBytes { offset, .. }
            | DecodeError::InvalidValue { offset, .. }
            | DecodeError::TooMany { offset, .. }
            | DecodeError::NotCanonical { offset, .. }
            | DecodeError::InvalidText { offset, .. }
            | DecodeError::Layout { offset, .. } => offset,
        }
    }
}

/// A cursor over borrowed bytes that remembers where it sits in the
/// original input (for error offsets) and can hand out bounded children.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Absolute offset of `buf[0]` in the outermost input.
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// Absolute offset of the next unread byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn any_left(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Takes exactly `n` bytes or fails without consuming anything.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.left() < n {
            return Err(DecodeError::Truncated {
                field,
                offset: self.offset(),
                needed: n - self.left(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A child reader over the next `n` bytes; the child can never read past
    /// them, so a length prefix bounds everything decoded inside it.
    pub fn sub(&mut self, n: usize, field: &'static str) -> Result<Reader<'a>, DecodeError> {
        let base = self.offset();
        let buf = self.take(n, field)?;
        Ok(Reader { buf, pos: 0, base })
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Fails if anything is left: every structure must be read exactly.
    pub fn expect_end(&self, field: &'static str) -> Result<(), DecodeError> {
        if self.any_left() {
            return Err(DecodeError::TrailingBytes {
                field,
                offset: self.offset(),
                extra: self.left(),
            });
        }
        Ok(())
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let b = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// Builds an error at the current position.
    pub fn invalid(&self, field: &'static str, value: u64) -> DecodeError {
        DecodeError::InvalidValue {
            field,
            offset: self.offset(),
            value,
        }
    }

    pub fn layout(&self, field: &'static str, reason: &'static str) -> DecodeError {
        DecodeError::Layout {
            field,
            offset: self.offset(),
            reason,
        }
    }
}

/// Encode/decode for every record section, zone entry and wire frame.
pub trait Codec: Sized {
    /// Appends the canonical encoding. Infallible: every value of a type
    /// that passed construction has exactly one encoding.
    fn encode(&self, out: &mut Vec<u8>);

    /// Reads one value, consuming exactly its bytes.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// The canonical encoding as a fresh vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes a whole buffer; trailing bytes are an error.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::read(&mut r)?;
        r.expect_end(std::any::type_name::<Self>())?;
        Ok(v)
    }
}

/// Reads a count-prefixed list whose elements must be strictly ascending by
/// `key`, the canonical order rule used throughout the format.
pub fn read_sorted_list<T: Codec, K: Ord>(
    r: &mut Reader<'_>,
    count: usize,
    field: &'static str,
    key: impl Fn(&T) -> K,
) -> Result<Vec<T>, DecodeError> {
    // Every element is at least one byte, so a count larger than what is
    // left is a lie: refuse before reserving memory for it.
    if count > r.left() {
        return Err(DecodeError::Truncated {
            field,
            offset: r.offset(),
            needed: count - r.left(),
        });
    }
    let mut out: Vec<T> = Vec::with_capacity(count);
    for _ in 0..count {
        let at = r.offset();
        let item = T::read(r)?;
        if let Some(prev) = out.last() {
            if key(prev) >= key(&item) {
                return Err(DecodeError::NotCanonical { field, offset: at });
            }
        }
        out.push(item);
    }
    Ok(out)
}

/// Maximum byte length of a short text field (`str8`).
pub const MAX_STR8: usize = 255;

/// A short UTF-8 string with a u8 length prefix; control characters are
/// refused so that a handle or name always prints as what it is.
pub fn read_str8(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    let len = r.u8(field)? as usize;
    let at = r.offset();
    let b = r.take(len, field)?;
    let s = std::str::from_utf8(b).map_err(|_| DecodeError::InvalidText { field, offset: at })?;
    if s.chars().any(char::is_control) {
        return Err(DecodeError::InvalidText { field, offset: at });
    }
    Ok(s.to_owned())
}

/// Whether `s` can be written as a `str8`: at most 255 bytes, no controls.
pub fn valid_str8(s: &str) -> bool {
    s.len() <= MAX_STR8 && !s.chars().any(char::is_control)
}

/// Writes a `str8`, always one [`read_str8`] accepts: a codec never writes
/// what it refuses to read. Callers construct strings through checked
/// constructors, but some texts come from elsewhere (a provider's refusal
/// reason, an error message naming what a client sent): a control
/// character is written as U+FFFD, and a text over 255 bytes is cut at a
/// character boundary and ends with "…" so the reader sees it was cut.
pub fn write_str8(out: &mut Vec<u8>, s: &str) {
    if valid_str8(s) {
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if clean.len() <= MAX_STR8 {
        out.push(clean.len() as u8);
        out.extend_from_slice(clean.as_bytes());
        return;
    }
    const CUT: &str = "\u{2026}";
    let mut end = MAX_STR8 - CUT.len();
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    out.push((end + CUT.len()) as u8);
    out.extend_from_slice(&clean.as_bytes()[..end]);
    out.extend_from_slice(CUT.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever text a caller hands it, write_str8 writes what read_str8
    /// reads back (a refusal reason with a newline made SUBMIT_STATUS
    /// answers undecodable).
    #[test]
    fn str8_writes_only_what_it_reads() {
        let long = format!("bound to another subject ({})", "0".repeat(300));
        for text in [
            "line1\nline2",
            "tab\there",
            "plain",
            "",
            long.as_str(),
            "é\u{7}",
        ] {
            let mut out = Vec::new();
            write_str8(&mut out, text);
            let back = read_str8(&mut Reader::new(&out), "t").unwrap();
            if valid_str8(text) {
                assert_eq!(back, text);
            } else {
                assert!(!back.chars().any(char::is_control), "{back:?}");
                assert!(back.len() <= MAX_STR8);
            }
        }
        let mut out = Vec::new();
        write_str8(&mut out, "a\nb");
        assert_eq!(
            read_str8(&mut Reader::new(&out), "t").unwrap(),
            "a\u{FFFD}b"
        );
        let mut out = Vec::new();
        write_str8(&mut out, &long);
        let back = read_str8(&mut Reader::new(&out), "t").unwrap();
        assert!(
            back.ends_with('\u{2026}') && back.starts_with("bound to"),
            "{back}"
        );
    }

    #[test]
    fn sub_reader_cannot_overrun_parent() {
        let data = [1u8, 2, 3, 4, 5];
        let mut r = Reader::new(&data);
        r.u8("a").unwrap();
        let mut s = r.sub(2, "s").unwrap();
        assert_eq!(s.offset(), 1);
        assert_eq!(s.u16("x").unwrap(), 0x0203);
        let e = s.u8("y").unwrap_err();
        assert_eq!(e.offset(), 3);
        assert_eq!(r.u16("z").unwrap(), 0x0405);
        assert!(r.expect_end("end").is_ok());
    }

    #[test]
    fn str8_refuses_controls_and_bad_utf8() {
        let mut r = Reader::new(&[2, b'a', 0x07]);
        assert!(matches!(
            read_str8(&mut r, "t"),
            Err(DecodeError::InvalidText { .. })
        ));
        let mut r = Reader::new(&[2, 0xC3, 0x28]);
        assert!(read_str8(&mut r, "t").is_err());
    }
}
