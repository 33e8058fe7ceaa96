//! A gRPC codec whose replies stay encoded: a bench times an RPC to the last byte of its
//! reply and decodes it afterwards, so that the client's own decoding (the same work for
//! every runtime that sends the same containers) does not weigh in the runtime's figure.

use std::marker::PhantomData;

use bytes::{Buf, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Encodes requests of type `Req` with prost; hands replies over as their bytes.
#[derive(Debug)]
pub struct EncodedReply<Req>(PhantomData<fn(Req)>);

impl<Req> Default for EncodedReply<Req> {
    fn default() -> Self {
        EncodedReply(PhantomData)
    }
}

impl<Req: prost::Message + Send + 'static> Codec for EncodedReply<Req> {
    type Encode = Req;
    type Decode = Bytes;
    type Encoder = RequestEncoder<Req>;
    type Decoder = ReplyBytes;

    fn encoder(&mut self) -> Self::Encoder {
        RequestEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ReplyBytes
    }
}

/// The request side of [`EncodedReply`].
#[derive(Debug)]
pub struct RequestEncoder<Req>(PhantomData<fn(Req)>);

impl<Req: prost::Message> Encoder for RequestEncoder<Req> {
    type Item = Req;
    type Error = Status;

    fn encode(&mut self, item: Req, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

/// The reply side of [`EncodedReply`].
#[derive(Debug)]
pub struct ReplyBytes;

impl Decoder for ReplyBytes {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}
