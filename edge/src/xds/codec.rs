//! A gRPC codec that decodes requests with prost and writes responses as pre-encoded
//! [`Frame`]s, so a resource's bytes are copied into the socket buffer but never re-encoded.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::encode::Frame;

#[derive(Debug)]
pub struct XdsCodec<Req>(PhantomData<fn() -> Req>);

impl<Req> Default for XdsCodec<Req> {
    fn default() -> Self {
        XdsCodec(PhantomData)
    }
}

impl<Req: prost::Message + Default + Send + 'static> Codec for XdsCodec<Req> {
    type Encode = Frame;
    type Decode = Req;
    type Encoder = FrameEncoder;
    type Decoder = RequestDecoder<Req>;

    fn encoder(&mut self) -> FrameEncoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> RequestDecoder<Req> {
        RequestDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write_to(dst);
        Ok(())
    }
}

#[derive(Debug)]
pub struct RequestDecoder<Req>(PhantomData<fn() -> Req>);

impl<Req: prost::Message + Default> Decoder for RequestDecoder<Req> {
    type Item = Req;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        Req::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed xDS request: {e}")))
    }
}
