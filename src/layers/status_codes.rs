//! A tower layer that makes tonic's own error answers follow gRPC's status-code spec
//! (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>), as grpc-go does: a request
//! message over the size limit is `RESOURCE_EXHAUSTED`, where tonic says `OUT_OF_RANGE`.
//!
//! That answer is "trailers-only" (the status sits in the response headers), so the layer
//! only looks at headers and never touches a body.

use std::task::{Context, Poll};

use futures::{TryFutureExt, future::MapOk};
use http::{HeaderValue, Response};
use tonic::{Code, Status};
use tower::{Layer, Service};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpecStatusCodesLayer;

impl<S> Layer<S> for SpecStatusCodesLayer {
    type Service = SpecStatusCodes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SpecStatusCodes { inner }
    }
}

/// The service made by [`SpecStatusCodesLayer`].
#[derive(Debug, Clone)]
pub struct SpecStatusCodes<S> {
    inner: S,
}

impl<S, Request, Body> Service<Request> for SpecStatusCodes<S>
where
    S: Service<Request, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(Response<Body>) -> Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.inner.call(request).map_ok(rewrite_status)
    }
}

fn rewrite_status<Body>(mut response: Response<Body>) -> Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let code = match (status.code(), status.message()) {
        (Code::OutOfRange, message) if message.starts_with("Error, decoded message length too large") => {
            Code::ResourceExhausted
        }
        _ => return response,
    };
    response
        .headers_mut()
        .insert(Status::GRPC_STATUS, HeaderValue::from(code as i32));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailers_only(status: Status) -> Response<()> {
        let mut response = Response::new(());
        status
            .add_header(response.headers_mut())
            .expect("a plain status encodes into headers");
        response
    }

    fn code_of(response: &Response<()>) -> Code {
        Status::from_header_map(response.headers()).unwrap().code()
    }

    #[test]
    fn oversize_request_becomes_resource_exhausted() {
        let response = rewrite_status(trailers_only(Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        )));
        assert_eq!(code_of(&response), Code::ResourceExhausted);
    }

    #[test]
    fn other_statuses_are_left_alone() {
        let response = rewrite_status(trailers_only(Status::out_of_range("page 9 of 3")));
        assert_eq!(code_of(&response), Code::OutOfRange);
    }
}
