//! Golden-signal metrics of gRPC calls (started, handled by code, latency, in flight),
//! for either side: [`MetricsLayer::server`] in the server stack, [`MetricsLayer::client`]
//! in the client channel stack.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::Code;
use tower::{Layer, Service};

use super::trace::{OnEnd, end_with_status};
use crate::{
    metrics::{CLIENT, GrpcMetrics, SERVER},
    rpc::{OnCallEnd, RpcMethod},
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// See the module documentation.
#[derive(Clone, Copy)]
pub struct MetricsLayer {
    metrics: &'static GrpcMetrics,
}

impl MetricsLayer {
    /// `grpc_server_*`.
    pub fn server() -> Self {
        Self { metrics: &SERVER }
    }

    /// `grpc_client_*`.
    pub fn client() -> Self {
        Self { metrics: &CLIENT }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            metrics: self.metrics,
        }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Clone)]
pub struct Metrics<S> {
    inner: S,
    metrics: &'static GrpcMetrics,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Metrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<OnCallEnd<ResBody, OnEnd>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let timer = self.metrics.start(RpcMethod::from_path(request.uri().path()));
        let call = self.inner.call(request);
        Box::pin(async move {
            match call.await {
                Ok(response) => Ok(end_with_status(
                    response,
                    Box::new(move |code| timer.finish(code)),
                )),
                Err(error) => {
                    timer.finish(Code::Unavailable);
                    Err(error)
                }
            }
        })
    }
}
