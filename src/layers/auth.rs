//! Authentication, when it is on (`AUTH_JWT_SECRET_FILE` or `AUTH_JWKS_FILE`): every call
//! but health and reflection needs a valid bearer token; the [`Caller`] it names goes into
//! the request's extensions for the handlers, and admin-only methods are refused here
//! (`PERMISSION_DENIED`). The rules that need the request body are the handlers'
//! (`Caller::may_act_for`). With authentication off this layer is not in the stack at all.
//!
//! A refusal is answered at once, without calling the service: `UNAUTHENTICATED` with an
//! `ErrorInfo` reason and nothing more.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::{Either, Ready, ready};
use http::{Request, Response, header::AUTHORIZATION};
use meshwork_rpc::RpcMethod;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::{
    auth::{self, Access, Authenticator, Caller},
    error::ApiError,
};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct AuthenticateLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthenticateLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The service made by [`AuthenticateLayer`].
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S, ReqBody> Service<Request<ReqBody>> for Authenticate<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let method = RpcMethod::of(&request);
        let access = auth::access(&method);
        if access == Access::Open {
            return Either::Left(self.inner.call(request));
        }
        let caller = self
            .authenticator
            .authenticate(request.headers().get(AUTHORIZATION))
            .map_err(auth::Refusal::into_api_error)
            .and_then(|caller| match access {
                Access::Admin if !caller.is_admin() => {
                    Err(auth::permission_denied("this method is for admins only"))
                }
                _ => Ok(caller),
            });
        match caller {
            Ok(caller) => {
                request.extensions_mut().insert::<Caller>(caller);
                Either::Left(self.inner.call(request))
            }
            Err(error) => Either::Right(ready(Ok(refuse(error, &method)))),
        }
    }
}

/// The answer to a refused call, in the error contract of the service it was for.
fn refuse(error: ApiError, method: &RpcMethod) -> Response<Body> {
    error.into_status(method.service).into_http()
}
