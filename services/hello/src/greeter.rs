//! The greeting itself.

use meshwork_proto::hello::v1::{SayHelloRequest, SayHelloResponse, hello_service_server::HelloService};
use tonic::{Request, Response, Status};

/// `hello.v1.HelloService`. Stateless, so there is nothing to store.
pub struct Greeter;

#[tonic::async_trait]
impl HelloService for Greeter {
    async fn say_hello(
        &self,
        request: Request<SayHelloRequest>,
    ) -> Result<Response<SayHelloResponse>, Status> {
        let message = greeting(&request.into_inner().name);
        Ok(Response::new(SayHelloResponse { message }))
    }
}

/// "Hello, <name>!", greeting "World" when no name is given.
fn greeting(name: &str) -> String {
    let name = if name.is_empty() { "World" } else { name };
    format!("Hello, {name}!")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name_or_the_world() {
        assert_eq!(greeting("Ada"), "Hello, Ada!");
        assert_eq!(greeting(""), "Hello, World!");
    }
}
