//! A bounded cursor over untrusted bytes. Every read checks the bytes left and returns a
//! [`DecodeError`] naming the structure it was reading, so a lying length field turns into an
//! error instead of a panic; `sub` hands out a nested cursor limited to a length taken from the
//! wire, so a set's parser cannot read past its set.

use crate::error::DecodeError;

/// A cursor over `buf`; reads advance it. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The bytes not yet read.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// How many bytes are left.
    pub fn left(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes, or `Truncated { what }` (and the cursor does not move).
    #[inline]
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated { what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    #[inline]
    pub fn take_array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated { what })?;
        self.buf = tail;
        Ok(*head)
    }

    /// A cursor over the next `len` bytes; this cursor moves past them.
    #[inline]
    pub fn sub(&mut self, len: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        self.take(len, what).map(Reader::new)
    }

    /// Skips `n` bytes.
    #[inline]
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        self.take(n, what).map(|_| ())
    }

    #[inline]
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.take_array::<1>(what).map(|[b]| b)
    }

    #[inline]
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.take_array(what).map(u16::from_be_bytes)
    }

    #[inline]
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.take_array(what).map(u32::from_be_bytes)
    }

    #[inline]
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.take_array(what).map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_order_and_stops_at_the_end() {
        let bytes = [0x00, 0x09, 0xde, 0xad, 0xbe, 0xef, 0x01];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u16("a"), Ok(9));
        assert_eq!(r.u32("b"), Ok(0xdead_beef));
        assert_eq!(r.left(), 1);
        assert_eq!(r.u16("c"), Err(DecodeError::Truncated { what: "c" }));
        // A failed read does not move the cursor.
        assert_eq!(r.u8("d"), Ok(1));
        assert!(r.is_empty());
        assert_eq!(r.u8("e"), Err(DecodeError::Truncated { what: "e" }));
    }

    #[test]
    fn sub_is_bounded_by_its_length() {
        let bytes = [1, 2, 3, 4, 5];
        let mut r = Reader::new(&bytes);
        let mut s = r.sub(2, "set").unwrap_or(Reader::new(&[]));
        assert_eq!(s.take_array::<2>("x"), Ok([1, 2]));
        assert!(s.u8("y").is_err());
        assert_eq!(r.rest(), &[3, 4, 5]);
        assert!(r.sub(4, "set").is_err());
        assert_eq!(r.u64("z"), Err(DecodeError::Truncated { what: "z" }));
        assert_eq!(r.take(3, "t"), Ok(&[3u8, 4, 5][..]));
    }
}
