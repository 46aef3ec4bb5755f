//! Compression formats of tarballs and layers, recognised by their magic bytes.

use std::fmt;
use std::io::{self, BufRead, Read};

/// How a tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// Recognises gzip and zstd by their magic bytes; anything else is taken for a plain tar
    /// (which the tar reader then checks header by header).
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&ZSTD_MAGIC) {
            Self::Zstd
        } else if head.starts_with(&GZIP_MAGIC) {
            Self::Gzip
        } else {
            Self::None
        }
    }

    /// A reader of the decompressed stream. It reads its input through `input`'s buffer,
    /// so no second copy of the compressed bytes is made.
    pub(crate) fn decoder<'r, B: BufRead + 'r>(self, input: B) -> io::Result<Box<dyn Read + 'r>> {
        Ok(match self {
            Self::None => Box::new(input),
            Self::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        let cases: [(&[u8], Compression); 6] = [
            (&[0x1f, 0x8b, 8, 0], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0], Compression::Zstd),
            (b"hello.txt\0\0", Compression::None),
            (&[0x28, 0xb5, 0x2f], Compression::None),
            (&[0x1f], Compression::None),
            (&[], Compression::None),
        ];
        for (head, want) in cases {
            assert_eq!(Compression::sniff(head), want, "head {head:?}");
        }
    }
}
