//! Clients that behave unlike tonic's `Channel`:
//!
//! - [`RawCodec`] / [`unary`]: arbitrary bytes as the request message, what a broken or
//!   hostile client sends;
//! - [`plain_http2`]: a bare HTTP/2 client. tonic's `Channel` enforces a request's
//!   `grpc-timeout` itself (answering `CANCELLED`), which hides the server's own answer to
//!   an expired deadline; this one only sends the header, as grpc-go and grpcio do.

use bytes::{Buf, BufMut};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

#[derive(Debug, Clone, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// Calls `path` (`/user.v1.UserService/CreateUser`) with `body` as the message bytes.
pub async fn unary(channel: Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A bare HTTP/2 client to `addr`, usable by the generated clients (`OrderServiceClient::new`).
pub fn plain_http2(
    addr: std::net::SocketAddr,
) -> impl tonic::client::GrpcService<
    tonic::body::Body,
    ResponseBody = hyper::body::Incoming,
    Error = hyper_util::client::legacy::Error,
    Future: Send,
> + Clone {
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    tower::ServiceBuilder::new()
        .map_request(move |mut request: http::Request<tonic::body::Body>| {
            // Generated clients send path-only URIs; a bare client needs the origin.
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_owned();
            *request.uri_mut() = format!("http://{addr}{path}").parse().expect("a loopback URI");
            request
        })
        .service(client)
}
