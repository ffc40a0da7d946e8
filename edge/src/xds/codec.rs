//! Request decoding for xDS streams: prost messages out of tonic's gRPC framing, with a small
//! initial buffer (an ACK is a few hundred bytes; the buffer grows for the rare large request).
//! Responses are not encoded here: they leave pre-encoded, see [`super::body`].

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};

/// Initial decode buffer per stream (tonic's default is 8 KiB, kept by every stream).
const DECODE_BUFFER: usize = 1024;

#[derive(Debug)]
pub struct RequestDecoder<Req>(PhantomData<fn() -> Req>);

impl<Req> Default for RequestDecoder<Req> {
    fn default() -> Self {
        RequestDecoder(PhantomData)
    }
}

impl<Req: prost::Message + Default> Decoder for RequestDecoder<Req> {
    type Item = Req;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        Req::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed xDS request: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(DECODE_BUFFER, DECODE_BUFFER)
    }
}
