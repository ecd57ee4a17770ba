//! Content codings (RFC 9110 §8.4.1): streaming encoders and decoders over `Bytes` chunks,
//! and [`Transformed`], a body that runs one over another body's data. Memory is bounded:
//! a chunk is fed in [`STEP`]-byte slices, what comes out is handed on at once, and a
//! decoder never holds more than what is left of its output limit.
//!
//! Levels were chosen by measurement (`benches/compress.rs`, README "Compression").

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

pub use crate::config::Coding;

/// gzip level: zlib's default, as `gzip -6` (and the usual `gzip_comp_level` of nginx).
pub const GZIP_LEVEL: u32 = 6;
/// brotli quality: 5. On text it is 10% smaller than gzip -6 (JSON: 2.5 times smaller)
/// for 1.5 to 4 times its CPU per MiB, and it beats quality 4 on both (README,
/// "Compression"); paid once per object with the cache.
pub const BR_QUALITY: u32 = 5;
/// brotli window (log2): 4 MiB, enough for web assets, bounded per stream.
pub const BR_LGWIN: u32 = 22;
/// zstd level: its default, about gzip -6's ratio for a tenth of its CPU per MiB.
pub const ZSTD_LEVEL: i32 = 3;

/// Input fed to a coder per call.
pub const STEP: usize = 16 * 1024;
/// Output gathered before it is handed on as a frame.
const FRAME: usize = 32 * 1024;
/// Input consumed within one poll before yielding to the runtime.
const BUDGET: usize = 256 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A decoder's output: refuses to grow past what is left of its limit (a decompression
/// bomb stops the decoder instead of filling memory).
pub struct Sink {
    buf: Vec<u8>,
    room: u64,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() as u64 > self.room {
            self.room = 0;
            return Err(io::Error::other(TooLarge));
        }
        self.room -= data.len() as u64;
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A decoded body grew past its limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("decoded body larger than limits.max_body")]
pub struct TooLarge;

enum Kind {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    UnGzip(flate2::write::GzDecoder<Sink>),
    UnDeflate(flate2::write::ZlibDecoder<Sink>),
    UnBr(Box<brotli::DecompressorWriter<Sink>>),
    UnZstd(zstd::stream::write::Decoder<'static, Sink>),
    Done,
}

/// One streaming encoder or decoder.
pub struct Coder {
    kind: Kind,
    /// Flush after every chunk (`text/event-stream`: each event goes out as it comes).
    flush_each: bool,
}

impl Coder {
    /// An encoder for `coding` at the chosen level.
    pub fn encoder(coding: Coding, flush_each: bool) -> io::Result<Coder> {
        let kind = match coding {
            Coding::Gzip => Kind::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Coding::Br => Kind::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BR_QUALITY,
                BR_LGWIN,
            ))),
            Coding::Zstd => Kind::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?),
        };
        Ok(Coder { kind, flush_each })
    }

    /// A decoder for the content coding `token` whose output stops past `limit` bytes;
    /// `None` for a coding torii cannot decode.
    pub fn decoder(token: &str, limit: u64) -> Option<Coder> {
        let sink = Sink {
            buf: Vec::new(),
            room: limit,
        };
        let kind = match token.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Kind::UnGzip(flate2::write::GzDecoder::new(sink)),
            "deflate" => Kind::UnDeflate(flate2::write::ZlibDecoder::new(sink)),
            "br" => Kind::UnBr(Box::new(brotli::DecompressorWriter::new(sink, 4096))),
            "zstd" => Kind::UnZstd(zstd::stream::write::Decoder::new(sink).ok()?),
            _ => return None,
        };
        Some(Coder {
            kind,
            flush_each: false,
        })
    }

    /// Whether torii can decode the content coding `token`.
    pub fn can_decode(token: &str) -> bool {
        ["gzip", "x-gzip", "deflate", "br", "zstd"]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(token))
    }

    /// Feeds `input`; what came out so far is appended to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.kind {
            Kind::Gzip(w) => w.write_all(input)?,
            Kind::Br(w) => w.write_all(input)?,
            Kind::Zstd(w) => w.write_all(input)?,
            Kind::UnGzip(w) => w.write_all(input)?,
            Kind::UnDeflate(w) => w.write_all(input)?,
            Kind::UnBr(w) => w.write_all(input)?,
            Kind::UnZstd(w) => w.write_all(input)?,
            Kind::Done => return Err(io::Error::other("coder used after its end")),
        }
        self.take(out);
        Ok(())
    }

    /// Flushes what was fed so far (a sync point of the coding), into `out`.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.kind {
            Kind::Gzip(w) => w.flush()?,
            Kind::Br(w) => w.flush()?,
            Kind::Zstd(w) => w.flush()?,
            _ => {}
        }
        self.take(out);
        Ok(())
    }

    /// Ends the stream: the encoder's trailer, or the decoder's check that the input was
    /// complete.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let kind = std::mem::replace(&mut self.kind, Kind::Done);
        let rest = match kind {
            Kind::Gzip(w) => w.finish()?,
            Kind::Br(w) => w.into_inner(),
            Kind::Zstd(w) => w.finish()?,
            Kind::UnGzip(w) => w.finish()?.buf,
            Kind::UnDeflate(w) => w.finish()?.buf,
            Kind::UnBr(mut w) => {
                w.close()?;
                match w.into_inner() {
                    Ok(sink) => sink.buf,
                    Err(_) => return Err(io::Error::other("truncated brotli stream")),
                }
            }
            Kind::UnZstd(mut w) => {
                w.flush()?;
                std::mem::take(&mut w.get_mut().buf)
            }
            Kind::Done => Vec::new(),
        };
        out.extend_from_slice(&rest);
        Ok(())
    }

    fn take(&mut self, out: &mut Vec<u8>) {
        let buf = match &mut self.kind {
            Kind::Gzip(w) => w.get_mut(),
            Kind::Br(w) => w.get_mut(),
            Kind::Zstd(w) => w.get_mut(),
            Kind::UnGzip(w) => &mut w.get_mut().buf,
            Kind::UnDeflate(w) => &mut w.get_mut().buf,
            Kind::UnBr(w) => &mut w.get_mut().buf,
            Kind::UnZstd(w) => &mut w.get_mut().buf,
            Kind::Done => return,
        };
        if out.is_empty() {
            std::mem::swap(out, buf);
        } else {
            out.append(buf);
        }
    }
}

/// Encodes a whole buffer (measurement and tests).
pub fn encode_all(coding: Coding, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut coder = Coder::encoder(coding, false)?;
    let mut out = Vec::new();
    for step in data.chunks(STEP) {
        coder.push(step, &mut out)?;
    }
    coder.finish(&mut out)?;
    Ok(out)
}

/// Decodes a whole buffer, refusing output past `limit` (tests).
pub fn decode_all(token: &str, data: &[u8], limit: u64) -> io::Result<Vec<u8>> {
    let mut coder =
        Coder::decoder(token, limit).ok_or_else(|| io::Error::other("unknown coding"))?;
    let mut out = Vec::new();
    for step in data.chunks(STEP) {
        coder.push(step, &mut out)?;
    }
    coder.finish(&mut out)?;
    Ok(out)
}

/// A body whose data a source can be told to stop storing (a fill), when what is read from
/// it turns out not to be servable (a decompression bomb).
pub trait Source: Body<Data = Bytes, Error = BoxError> + Unpin {
    /// Whatever is being stored from this body is abandoned.
    fn abandon(&mut self) {}
}

/// `inner` with its data run through a coder; trailers pass after the coder's end.
pub struct Transformed<B> {
    inner: B,
    coder: Coder,
    /// What is left of the chunk being fed.
    input: Bytes,
    out: Vec<u8>,
    trailers: Option<HeaderMap>,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Reading,
    /// The coder has ended; its last output (then trailers) is still to go.
    Ending,
    Done,
}

impl<B> Transformed<B> {
    pub fn new(inner: B, coder: Coder) -> Transformed<B> {
        Transformed {
            inner,
            coder,
            input: Bytes::new(),
            out: Vec::new(),
            trailers: None,
            state: State::Reading,
        }
    }

    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    fn data(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(std::mem::take(
            &mut self.out,
        ))))))
    }
}

impl<B: Source> Transformed<B> {
    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.inner.abandon();
        self.state = State::Done;
        self.input = Bytes::new();
        Poll::Ready(Some(Err(Box::new(e))))
    }
}

impl<B: Source> Body for Transformed<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut fed = 0usize;
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Ending => {
                    if !this.out.is_empty() {
                        return this.data();
                    }
                    this.state = State::Done;
                    return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                State::Reading => {}
            }
            if !this.input.is_empty() {
                let n = this.input.len().min(STEP);
                let step = this.input.split_to(n);
                fed += n;
                if let Err(e) = this.coder.push(&step, &mut this.out) {
                    return this.fail(e);
                }
                if this.input.is_empty() && this.coder.flush_each {
                    if let Err(e) = this.coder.flush(&mut this.out) {
                        return this.fail(e);
                    }
                }
                if this.out.len() >= FRAME || (this.input.is_empty() && !this.out.is_empty()) {
                    return this.data();
                }
                if fed >= BUDGET {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                continue;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.input = data,
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        if let Err(e) = this.coder.finish(&mut this.out) {
                            return this.fail(e);
                        }
                        this.state = State::Ending;
                    }
                },
                Poll::Ready(None) => {
                    if let Err(e) = this.coder.finish(&mut this.out) {
                        return this.fail(e);
                    }
                    this.state = State::Ending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl<B> std::fmt::Debug for Transformed<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformed")
            .field("state", &self.state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| format!("line {} of the sample {}\n", i, i % 7).into_bytes())
            .collect()
    }

    #[test]
    fn each_coding_round_trips() {
        let data = sample();
        for (coding, token) in [
            (Coding::Gzip, "gzip"),
            (Coding::Br, "br"),
            (Coding::Zstd, "zstd"),
        ] {
            let enc = encode_all(coding, &data).unwrap();
            assert!(enc.len() < data.len() / 4, "{token}: {}", enc.len());
            assert_eq!(decode_all(token, &enc, u64::MAX).unwrap(), data, "{token}");
        }
    }

    #[test]
    fn decoding_stops_at_the_limit() {
        let data = vec![0u8; 4 << 20];
        for (coding, token) in [
            (Coding::Gzip, "gzip"),
            (Coding::Br, "br"),
            (Coding::Zstd, "zstd"),
        ] {
            let enc = encode_all(coding, &data).unwrap();
            let err = decode_all(token, &enc, 1 << 20).unwrap_err();
            assert!(err.to_string().contains("max_body"), "{token}: {err}");
        }
    }
}
