//! Which method a request path names, and what kind of call it is: resolved once per call
//! (by the outermost layer of either stack, into the request's extensions) from the same
//! descriptor sets that reflection serves. Whether a method may be sent again is declared
//! in its `.proto` (`option idempotency_level = NO_SIDE_EFFECTS`), not guessed from its name.

use std::sync::LazyLock;

use foldhash::HashMap;

use prost::Message;
use prost_types::method_options::IdempotencyLevel;

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

/// What sending a call twice does, as its `.proto` declares (`idempotency_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Not declared: a repeat may do the work twice.
    Unknown,
    /// `NO_SIDE_EFFECTS`: a read.
    NoSideEffects,
    /// `IDEMPOTENT`: a repeat has the effect of one call.
    Idempotent,
}

impl Idempotency {
    /// Whether a client may send the call again after it got no answer.
    pub fn safe_to_repeat(self) -> bool {
        self != Self::Unknown
    }
}

/// A method of a known service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcMethod {
    /// Full service name, `user.v1.UserService`.
    pub service: &'static str,
    /// Method name, `CreateUser`.
    pub method: &'static str,
    /// `user.v1.UserService/CreateUser`: the span name the contract asks for.
    pub full_name: &'static str,
    pub call_type: CallType,
    pub idempotency: Idempotency,
    /// Its place in the method table (0 for [`Self::UNKNOWN`]): per-method state, such as
    /// metric handles, is an array indexed by it instead of a map looked up per call.
    pub index: usize,
}

impl RpcMethod {
    /// Stands for every path that names no known method. Labels stay bounded: a client
    /// sending random paths cannot create new metric series.
    pub const UNKNOWN: Self = Self {
        service: "unknown",
        method: "unknown",
        full_name: "unknown",
        call_type: CallType::Unary,
        idempotency: Idempotency::Unknown,
        index: 0,
    };

    /// How many indices there are: every known method, and [`Self::UNKNOWN`].
    pub fn count() -> usize {
        METHODS.len() + 1
    }

    /// The method `path` (`/user.v1.UserService/CreateUser`) names, or [`Self::UNKNOWN`].
    pub fn from_path(path: &str) -> Self {
        METHODS.get(path).copied().unwrap_or(Self::UNKNOWN)
    }

    /// The method a request was resolved to by the outermost layer, or resolved now from its
    /// path when no layer did.
    pub fn of<B>(request: &http::Request<B>) -> Self {
        match request.extensions().get::<Self>() {
            Some(method) => *method,
            None => Self::from_path(request.uri().path()),
        }
    }

    /// Every method of the service named `service` (`user.v1.UserService`).
    pub fn all_of(service: &str) -> Vec<Self> {
        METHODS
            .values()
            .filter(|method| method.service == service)
            .copied()
            .collect()
    }

    /// Whether this is a method of `grpc.health.v1.Health`.
    pub fn is_health(&self) -> bool {
        self.service == "grpc.health.v1.Health"
    }
}

/// Every method of every service a Meshwork binary can serve or call. Hashed with foldhash,
/// not std's SipHash: every call looks its path up once, and SipHash over the path was most
/// of the lookup (370 instructions; 140 with foldhash, callgrind). A table that is never
/// written after start has no flooding to defend against.
static METHODS: LazyLock<HashMap<String, RpcMethod>> = LazyLock::new(|| {
    let sets = [
        meshwork_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::default();
    for encoded in sets {
        let set = prost_types::FileDescriptorSet::decode(encoded).expect("embedded descriptor sets decode");
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                let service_name: &'static str = leak(format!("{package}.{}", service.name()));
                for method in &service.method {
                    let rpc = RpcMethod {
                        service: service_name,
                        method: leak(method.name().to_owned()),
                        full_name: leak(format!("{service_name}/{}", method.name())),
                        call_type: call_type(method),
                        idempotency: idempotency(method),
                        index: methods.len() + 1,
                    };
                    methods.insert(format!("/{service_name}/{}", method.name()), rpc);
                }
            }
        }
    }
    methods
});

fn call_type(method: &prost_types::MethodDescriptorProto) -> CallType {
    match (method.client_streaming(), method.server_streaming()) {
        (false, false) => CallType::Unary,
        (true, false) => CallType::ClientStream,
        (false, true) => CallType::ServerStream,
        (true, true) => CallType::BidiStream,
    }
}

fn idempotency(method: &prost_types::MethodDescriptorProto) -> Idempotency {
    let level = method.options.as_ref().map(|options| options.idempotency_level());
    match level {
        Some(IdempotencyLevel::NoSideEffects) => Idempotency::NoSideEffects,
        Some(IdempotencyLevel::Idempotent) => Idempotency::Idempotent,
        _ => Idempotency::Unknown,
    }
}

/// The method table lives for the whole process; its names are leaked once so that labels
/// and span attributes can borrow them for free.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_resolve_with_their_call_type() {
        let create = RpcMethod::from_path("/user.v1.UserService/CreateUser");
        assert_eq!(
            (create.service, create.method, create.full_name),
            (
                "user.v1.UserService",
                "CreateUser",
                "user.v1.UserService/CreateUser"
            )
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
    fn retry_safety_is_what_the_protos_declare() {
        let safe = |path| RpcMethod::from_path(path).idempotency.safe_to_repeat();
        assert!(safe("/user.v1.UserService/GetUser"));
        assert!(safe("/user.v1.UserService/ListUsers"));
        assert!(safe("/order.v1.OrderService/GetOrder"));
        assert!(!safe("/user.v1.UserService/CreateUser"));
        assert!(!safe("/user.v1.UserService/DeleteUser"));
        assert!(!safe("/order.v1.OrderService/CancelOrder"));
        assert!(
            !safe("/no.such.Service/GetThing"),
            "unknown methods are never repeated"
        );
    }
}
