//! The codec of every generated server and client (`codec_path` in `build.rs`): prost's
//! encoder and decoder, as `tonic_prost::ProstCodec` has them, with a first buffer of
//! [`BUFFER_SIZE`] instead of tonic's 8 KiB.
//!
//! tonic allocates both buffers on every call, before it knows a message's size. The mesh's
//! messages are tens to hundreds of bytes, and an 8 KiB block is past glibc's per-thread cache
//! (1,032 bytes), so every call paid for the allocator's slow path four times in order-service
//! (two buffers as a server, two as User's client) and twice in the others. A larger message
//! still fits: the decoder reserves its whole length once its header is read, and the encoder's
//! buffer grows as prost writes into it.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The first size of a call's encode and decode buffers: a block glibc serves from its
/// per-thread cache.
pub const BUFFER_SIZE: usize = 1024;

/// How many bytes of a stream's ready messages are sent as one batch: tonic's default.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// See the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U> {
    messages: PhantomData<(T, U)>,
}

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self {
            messages: PhantomData,
        }
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}
