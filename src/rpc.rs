//! What a gRPC call is, seen from HTTP/2: which method a request path names, what kind of
//! call it is, and the status code it ended with. Shared by the telemetry layers of the
//! server and of the client.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll},
};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tonic::Code;

use crate::proto;

/// The kind of a call, as grpc-ecosystem metrics label it (`grpc_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    Unary,
    ClientStream,
    ServerStream,
    BidiStream,
}

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ClientStream => "client_stream",
            Self::ServerStream => "server_stream",
            Self::BidiStream => "bidi_stream",
        }
    }
}

/// A method of a known service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcMethod {
    /// Full service name, `user.v1.UserService`.
    pub service: &'static str,
    /// Method name, `CreateUser`.
    pub method: &'static str,
    pub call_type: CallType,
}

impl RpcMethod {
    /// Stands for every path that names no known method. Labels stay bounded: a client
    /// sending random paths cannot create new metric series.
    pub const UNKNOWN: Self = Self {
        service: "unknown",
        method: "unknown",
        call_type: CallType::Unary,
    };

    /// The method `path` (`/user.v1.UserService/CreateUser`) names, or [`Self::UNKNOWN`].
    pub fn from_path(path: &str) -> Self {
        METHODS.get(path).copied().unwrap_or(Self::UNKNOWN)
    }

    /// Every method of the service named `service` (`user.v1.UserService`).
    pub fn all_of(service: &str) -> Vec<Self> {
        METHODS
            .values()
            .filter(|method| method.service == service)
            .copied()
            .collect()
    }

    /// `user.v1.UserService/CreateUser`: the span name the contract asks for.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.service, self.method)
    }
}

/// Every method of every service a Meshwork binary can serve or call, read once from the
/// same descriptor sets that reflection serves.
static METHODS: LazyLock<HashMap<String, RpcMethod>> = LazyLock::new(|| {
    let sets = [
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for encoded in sets {
        let set = prost_types::FileDescriptorSet::decode(encoded).expect("embedded descriptor sets decode");
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                let service_name: &'static str = leak(format!("{package}.{}", service.name()));
                for method in &service.method {
                    let call_type = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => CallType::Unary,
                        (true, false) => CallType::ClientStream,
                        (false, true) => CallType::ServerStream,
                        (true, true) => CallType::BidiStream,
                    };
                    let rpc = RpcMethod {
                        service: service_name,
                        method: leak(method.name().to_owned()),
                        call_type,
                    };
                    methods.insert(format!("/{service_name}/{}", method.name()), rpc);
                }
            }
        }
    }
    methods
});

/// The method table lives for the whole process; its names are leaked once so that labels
/// and span attributes can borrow them for free.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// A status code as grpc-go spells it (`OK`, `NotFound`, `Canceled`): the `grpc_code`
/// label values that existing Grafana dashboards expect.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The `grpc-status` in a header or trailer map, if there is one.
pub fn status_in(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

pin_project_lite::pin_project! {
    /// A response body that reports the call's final status code once: from the trailers,
    /// or `Unknown` if the stream ends without them, or `Canceled` if it is dropped first
    /// (the peer went away). Trace and metrics layers close their span and count the call
    /// here, because a gRPC status arrives after the body, not with the headers.
    pub struct OnCallEnd<B, F: FnOnce(Code)> {
        #[pin]
        inner: B,
        on_end: Option<F>,
    }

    impl<B, F: FnOnce(Code)> PinnedDrop for OnCallEnd<B, F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(on_end) = this.project().on_end.take() {
                on_end(Code::Cancelled);
            }
        }
    }
}

impl<B, F: FnOnce(Code)> OnCallEnd<B, F> {
    pub fn new(inner: B, on_end: F) -> Self {
        Self {
            inner,
            on_end: Some(on_end),
        }
    }

    /// A body whose call has already been reported (a trailers-only response).
    pub fn ended(inner: B) -> Self {
        Self { inner, on_end: None }
    }
}

impl<B: Body, F: FnOnce(Code)> Body for OnCallEnd<B, F> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        let ended = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| status_in(trailers).unwrap_or(Code::Unknown)),
            Some(Err(_)) => Some(Code::Unknown),
            None => Some(Code::Unknown),
        };
        if let Some(code) = ended
            && let Some(on_end) = this.on_end.take()
        {
            on_end(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_resolve_with_their_call_type() {
        let create = RpcMethod::from_path("/user.v1.UserService/CreateUser");
        assert_eq!(
            (create.service, create.method),
            ("user.v1.UserService", "CreateUser")
        );
        assert_eq!(create.call_type, CallType::Unary);
        assert_eq!(
            RpcMethod::from_path("/order.v1.OrderService/WatchOrders").call_type,
            CallType::ServerStream
        );
        assert_eq!(
            RpcMethod::from_path("/grpc.health.v1.Health/Watch").call_type,
            CallType::ServerStream
        );
        assert_eq!(
            RpcMethod::from_path("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").call_type,
            CallType::BidiStream
        );
        assert_eq!(RpcMethod::from_path("/evil/../path"), RpcMethod::UNKNOWN);
    }

    #[test]
    fn code_names_follow_grpc_go() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::NotFound), "NotFound");
    }
}
