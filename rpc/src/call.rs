//! The end of a call. A gRPC status arrives after the response body, in the trailers, so
//! "the call ended, with this code" is known only when the body ends. [`observe_response`]
//! wraps a response so that its [`CallEnd`] hook runs exactly once: with the code in the
//! trailers (at once for a trailers-only answer), `Unknown` if the stream ends without one,
//! or `Canceled` if the call is dropped first (the peer went away, or reset the stream).
//!
//! One hook per call and side: the server's feeds the span, the metrics, the access log and
//! the connection's activity together; the client's feeds its span and metrics.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderName, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;

/// What to do when a call ends.
pub trait CallEnd: Send + 'static {
    fn ended(self, code: Code);
}

/// Holds a call's [`CallEnd`] until the call ends; dropped before that, it reports
/// `Canceled`, so a call whose future or body is dropped is still counted once.
pub struct CallGuard<E: CallEnd>(Option<E>);

impl<E: CallEnd> CallGuard<E> {
    pub fn new(on_end: E) -> Self {
        Self(Some(on_end))
    }

    /// Reports the end (once; later calls do nothing).
    pub fn end(&mut self, code: Code) {
        if let Some(on_end) = self.0.take() {
            on_end.ended(code);
        }
    }
}

impl<E: CallEnd> Drop for CallGuard<E> {
    fn drop(&mut self) {
        self.end(Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports its call's end to a [`CallGuard`].
    pub struct ObservedBody<B, E: CallEnd> {
        #[pin]
        inner: B,
        guard: CallGuard<E>,
    }
}

/// Wraps `response` so that `guard` hears how the call ended.
pub fn observe_response<B, E: CallEnd>(
    response: Response<B>,
    mut guard: CallGuard<E>,
) -> Response<ObservedBody<B, E>> {
    // A trailers-only answer (every error, most of them before any handler ran) carries its
    // status in the headers: the call has ended already.
    if let Some(code) = status_in(response.headers()) {
        guard.end(code);
    }
    response.map(|inner| ObservedBody { inner, guard })
}

impl<B: Body, E: CallEnd> Body for ObservedBody<B, E> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.guard.end(status_in(trailers).unwrap_or(Code::Unknown));
                }
            }
            Some(Err(_)) | None => this.guard.end(Code::Unknown),
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

/// The `grpc-status` in a header or trailer map, if there is one.
pub fn status_in(headers: &HeaderMap) -> Option<Code> {
    // A `HeaderName`, not a `&str`: a lookup by `&str` parses and validates the name again
    // (twice per call here: the response's headers, then its trailers).
    const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    let value = headers.get(GRPC_STATUS)?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Code>>>);

    impl CallEnd for Seen {
        fn ended(self, code: Code) {
            self.0.lock().unwrap().push(code);
        }
    }

    #[test]
    fn a_trailers_only_answer_ends_at_once_and_only_once() {
        let seen = Seen::default();
        let response = tonic::Status::not_found("x").into_http::<()>();
        let observed = observe_response(response, CallGuard::new(seen.clone()));
        drop(observed);
        assert_eq!(*seen.0.lock().unwrap(), [Code::NotFound]);
    }

    #[test]
    fn a_call_dropped_before_its_end_is_cancelled() {
        let seen = Seen::default();
        drop(CallGuard::new(seen.clone()));
        assert_eq!(*seen.0.lock().unwrap(), [Code::Cancelled]);
    }

    #[test]
    fn code_names_follow_grpc_go() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::NotFound), "NotFound");
    }
}
