//! The gRPC handlers of `order.v1.OrderService`.

use std::sync::Arc;

use meshwork::{
    Caller,
    error::{ApiError, FieldViolations, respond},
    pagination::PageRequest,
    time::now_micros,
};
use meshwork_clients::Deadline;
use meshwork_events::EventId;
use meshwork_proto::order::v1::{
    self as pb,
    order_service_server::{OrderService, SERVICE_NAME},
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    domain::{Idempotency, NewOrder, Order, OrderId, UserId},
    order_events::{OrderEvents, WatchError, WatchStream},
    store::{Inserted, Keyed, OrderStore},
    users::UserDirectory,
};

/// `order.v1.OrderService` over an [`OrderStore`] and a [`UserDirectory`].
pub struct OrderApi {
    store: Arc<OrderStore>,
    users: Arc<dyn UserDirectory>,
    events: OrderEvents,
    shutdown: CancellationToken,
    /// The largest response (`MAX_MESSAGE_BYTES`): a ListOrders page is cut to fit it.
    max_message_bytes: usize,
}

impl OrderApi {
    pub fn new(
        store: Arc<OrderStore>,
        users: Arc<dyn UserDirectory>,
        events: OrderEvents,
        shutdown: CancellationToken,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            store,
            users,
            events,
            shutdown,
            max_message_bytes,
        }
    }

    async fn create(
        &self,
        caller: &Caller,
        deadline: Option<Deadline>,
        request: pb::CreateOrderRequest,
    ) -> Result<Order, ApiError> {
        let new = NewOrder::try_from(request)?;
        // Before the request_id lookup: another user's orders are not even looked at.
        caller.may_act_for(new.user_id.as_str())?;
        // A repeated request answers with the first order and asks nobody anything.
        if let Some(key) = new.idempotency() {
            let existing = self.store.find_by_request_id(&new.user_id, &key.request_id).await;
            if let Some(first) = existing.map_err(|e| e.into_api(""))? {
                return repeat(&key, first);
            }
        }
        let exists = self
            .users
            .user_exists(new.user_id.as_str(), deadline, caller.credential())
            .await?;
        if !exists {
            return Err(ApiError::FailedPrecondition {
                reason: "USER_NOT_FOUND",
                message: format!("user {:?} does not exist", new.user_id.as_str()),
            });
        }
        let (order, key) = new.place(now_micros());
        // The store tells the watchers once it has committed.
        let inserted = self.store.insert(&order, key.as_ref()).await;
        match (inserted.map_err(|e| e.into_api(order.id.as_str()))?, key) {
            // A concurrent call with the same user and request_id got there first.
            (Inserted::Existing(first), Some(key)) => repeat(&key, first),
            (Inserted::Existing(first), None) => Ok(first.order),
            (Inserted::Created, _) => Ok(order),
        }
    }

    /// The order `id`, if `caller` may see it. Another user's order is PERMISSION_DENIED, as
    /// the contract's status table says (not NOT_FOUND: ids are unguessable UUIDv7s, so
    /// saying it exists tells little, and a clear "not yours" is easier to act on).
    async fn get(&self, caller: &Caller, id: &OrderId) -> Result<Order, ApiError> {
        let order = self.store.get(id).await.map_err(|e| e.into_api(id.as_str()))?;
        caller.may_act_for(order.user_id.as_str())?;
        Ok(order)
    }

    async fn list(
        &self,
        caller: &Caller,
        request: pb::ListOrdersRequest,
    ) -> Result<pb::ListOrdersResponse, ApiError> {
        let mut violations = FieldViolations::new();
        // A page token is bound to the filter as the caller wrote it ("" for every user).
        let filter = request.user_id;
        let user_id = violations.check("user_id", UserId::parse_filter(filter.clone()));
        let page = PageRequest::parse(request.page_size, &request.page_token, &filter, &mut violations);
        let (user_id, page) = violations.finish((user_id, page))?;
        caller.may_see(user_id.as_ref().map(UserId::as_str))?;
        let orders = self
            .store
            .list(user_id.as_ref(), page.after.as_deref(), page.fetch_limit())
            .await
            .map_err(|e| e.into_api(""))?;
        let orders: Vec<pb::Order> = orders.into_iter().map(Into::into).collect();
        let (orders, next_page_token) = page.finish(
            orders,
            &filter,
            |order| order.id.as_str(),
            Message::encoded_len,
            self.max_message_bytes,
        );
        Ok(pb::ListOrdersResponse {
            orders,
            next_page_token,
        })
    }

    async fn cancel(&self, caller: &Caller, request: pb::CancelOrderRequest) -> Result<Order, ApiError> {
        let id = parse_order_id(request.id)?;
        // Checked before anything changes; an order's user never changes, so the check
        // still holds when the cancel commits.
        if !caller.is_admin() {
            self.get(caller, &id).await?;
        }
        // The store tells the watchers once it has committed.
        let cancelled = self.store.cancel(&id, now_micros()).await;
        cancelled.map_err(|e| e.into_api(id.as_str()))
    }

    /// A watch of the user's orders (all, when none is named), resumed after an event
    /// when one is named.
    async fn watch(&self, caller: &Caller, request: pb::WatchOrdersRequest) -> Result<WatchStream, ApiError> {
        let mut violations = FieldViolations::new();
        let user_id = violations.check("user_id", UserId::parse_filter(request.user_id));
        let after = violations.check("after_event_id", parse_event_id(&request.after_event_id));
        let (user_id, after) = violations.finish((user_id, after))?;
        caller.may_see(user_id.as_ref().map(UserId::as_str))?;
        let watch = self.events.watch(user_id, after, self.shutdown.clone()).await;
        watch.map_err(|error| match error {
            // Answered at once: the caller may retry later, or elsewhere.
            full @ WatchError::TooManyWatchers(_) => ApiError::ResourceExhausted {
                reason: "TOO_MANY_WATCHES",
                message: format!("{full}; retry later"),
            },
            gone @ WatchError::NotKept(_) => ApiError::OutOfRange {
                reason: "EVENT_NOT_KEPT",
                message: gone.to_string(),
            },
            WatchError::Database(cause) => ApiError::database_unavailable("order", &cause),
        })
    }
}

/// The answer to a CreateOrder whose user and `request_id` created `first` already: that
/// order when the request is the same (a retry), else `INVALID_ARGUMENT` on `request_id`.
fn repeat(key: &Idempotency, first: Keyed) -> Result<Order, ApiError> {
    match key.fingerprint.repeats(&first.fingerprint) {
        true => Ok(first.order),
        false => Err(ApiError::invalid_field(
            "request_id",
            "was already used by this user for a different order",
        )),
    }
}

/// `after_event_id`: empty (from now on), or the id of an event sent before.
fn parse_event_id(text: &str) -> Result<Option<EventId>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    // An id is a UUID (36 characters); checked before parsing, whatever its length.
    match text.len() <= 64 {
        true => EventId::parse(text)
            .map(Some)
            .ok_or_else(|| "must be the event_id of an event sent by WatchOrders".to_owned()),
        false => Err("must be the event_id of an event sent by WatchOrders".to_owned()),
    }
}

/// The `id` field of Get/Cancel.
fn parse_order_id(id: String) -> Result<OrderId, ApiError> {
    OrderId::parse(id).map_err(|why| ApiError::invalid_field("id", why))
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    type WatchOrdersStream = WatchStream;

    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let deadline = extensions.get::<Deadline>().copied();
        let order = self.create(Caller::of(&extensions), deadline, request).await;
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
        let (_, extensions, request) = request.into_parts();
        let order = match parse_order_id(request.id) {
            Ok(id) => self.get(Caller::of(&extensions), &id).await,
            Err(error) => Err(error),
        };
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
        let (_, extensions, request) = request.into_parts();
        respond(SERVICE_NAME, self.list(Caller::of(&extensions), request).await)
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let order = self.cancel(Caller::of(&extensions), request).await;
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
        let (_, extensions, request) = request.into_parts();
        respond(SERVICE_NAME, self.watch(Caller::of(&extensions), request).await)
    }
}
