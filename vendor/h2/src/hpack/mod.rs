mod decoder;
mod encoder;
pub(crate) mod header;
pub(crate) mod huffman;
mod table;

#[cfg(test)]
mod test;

pub use self::decoder::{Decoder, DecoderError, NeedMore};
pub use self::encoder::Encoder;
pub(crate) use self::encoder::encode_without_indexing; // torii patch 01: ext::PreEncoded
pub use self::header::{BytesStr, Header};
