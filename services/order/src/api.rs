//! The gRPC handlers of `order.v1.OrderService`.

use std::sync::Arc;

use meshwork::{
    error::{ApiError, FieldViolations, respond},
    pagination::PageRequest,
    proto::order::v1::{
        self as pb, OrderEventType,
        order_service_server::{OrderService, SERVICE_NAME},
    },
    time::now_micros,
};
use tokio_util::sync::CancellationToken;
use meshwork_clients::Deadline;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{NewOrder, Order, OrderStatus, parse_id},
    order_events::{OrderEvents, WatchStream},
    store::{Inserted, OrderStore},
    users::UserDirectory,
};

/// `order.v1.OrderService` over an [`OrderStore`] and a [`UserDirectory`].
pub struct OrderApi {
    store: Arc<dyn OrderStore>,
    users: Arc<dyn UserDirectory>,
    events: OrderEvents,
    shutdown: CancellationToken,
}

impl OrderApi {
    pub fn new(
        store: Arc<dyn OrderStore>,
        users: Arc<dyn UserDirectory>,
        events: OrderEvents,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            users,
            events,
            shutdown,
        }
    }

    async fn create(
        &self,
        deadline: Option<Deadline>,
        request: pb::CreateOrderRequest,
    ) -> Result<Order, ApiError> {
        let new = NewOrder::try_from(request)?;
        // A repeated request answers with the first order and asks nobody anything.
        if let Some(request_id) = &new.request_id {
            let existing = self.store.find_by_request_id(request_id).await;
            if let Some(order) = existing.map_err(|e| e.into_api(""))? {
                return Ok(order);
            }
        }
        if !self.users.user_exists(&new.user_id, deadline).await? {
            return Err(ApiError::FailedPrecondition {
                reason: "USER_NOT_FOUND",
                message: format!("user {:?} does not exist", new.user_id),
            });
        }
        let now = now_micros();
        let order = Order {
            id: Uuid::now_v7().to_string(),
            user_id: new.user_id,
            items: new.items,
            total_cents: new.total_cents,
            status: OrderStatus::Pending,
            create_time: now,
            update_time: now,
        };
        let inserted = self.store.insert(&order, new.request_id.as_deref()).await;
        match inserted.map_err(|e| e.into_api(&order.id))? {
            // A concurrent call with the same request_id got there first.
            Inserted::Existing(first) => Ok(first),
            Inserted::Created => {
                self.events.publish(OrderEventType::Created, &order);
                Ok(order)
            }
        }
    }

    async fn get(&self, request: pb::GetOrderRequest) -> Result<Order, ApiError> {
        parse_order_id(&request.id)?;
        self.store
            .get(&request.id)
            .await
            .map_err(|e| e.into_api(&request.id))
    }

    async fn list(&self, request: pb::ListOrdersRequest) -> Result<pb::ListOrdersResponse, ApiError> {
        let mut violations = FieldViolations::new();
        if !request.user_id.is_empty() {
            violations.check("user_id", parse_id(&request.user_id));
        }
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            &request.user_id,
            &mut violations,
        );
        let page = violations.into_result(|| page.expect("no violation means the page parsed"))?;
        let user_id = Some(request.user_id.as_str()).filter(|id| !id.is_empty());
        let orders = self
            .store
            .list(user_id, page.after.as_deref(), page.fetch_limit())
            .await
            .map_err(|e| e.into_api(""))?;
        let (orders, next_page_token) = page.finish(orders, &request.user_id, |order| &order.id);
        Ok(pb::ListOrdersResponse {
            orders: orders.into_iter().map(Into::into).collect(),
            next_page_token,
        })
    }

    async fn cancel(&self, request: pb::CancelOrderRequest) -> Result<Order, ApiError> {
        parse_order_id(&request.id)?;
        let order = self
            .store
            .cancel(&request.id, now_micros())
            .await
            .map_err(|e| e.into_api(&request.id))?;
        self.events.publish(OrderEventType::Cancelled, &order);
        Ok(order)
    }

    fn watch(&self, request: pb::WatchOrdersRequest) -> Result<WatchStream, ApiError> {
        let mut violations = FieldViolations::new();
        if !request.user_id.is_empty() {
            violations.check("user_id", parse_id(&request.user_id));
        }
        violations.into_result(|| {
            let user_id = Some(request.user_id).filter(|id| !id.is_empty());
            self.events.watch(user_id, self.shutdown.clone())
        })
    }
}

/// The `id` field of Get/Cancel.
fn parse_order_id(id: &str) -> Result<(), ApiError> {
    let mut violations = FieldViolations::new();
    violations.check("id", parse_id(id));
    violations.into_result(|| ())
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    type WatchOrdersStream = WatchStream;

    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let deadline = request.extensions().get::<Deadline>().copied();
        let order = self.create(deadline, request.into_inner()).await;
        respond(
            SERVICE_NAME,
            order.map(|order| pb::CreateOrderResponse {
                order: Some(order.into()),
            }),
        )
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let order = self.get(request.into_inner()).await;
        respond(
            SERVICE_NAME,
            order.map(|order| pb::GetOrderResponse {
                order: Some(order.into()),
            }),
        )
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        respond(SERVICE_NAME, self.list(request.into_inner()).await)
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let order = self.cancel(request.into_inner()).await;
        respond(
            SERVICE_NAME,
            order.map(|order| pb::CancelOrderResponse {
                order: Some(order.into()),
            }),
        )
    }

    async fn watch_orders(
        &self,
        request: Request<pb::WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        respond(SERVICE_NAME, self.watch(request.into_inner()))
    }
}
