//! The gRPC inventory service end to end: a real `erp run` with JWT auth on, the real
//! broker and registry; stock levels read from the store, reservations answered once
//! the inventory processor applied them, idempotent by key, and invisible to the saga.

use std::time::Duration;

use erp_query_api::grpc::proto::inventory_service_client::InventoryServiceClient;
use erp_query_api::grpc::proto::{
    CheckStockRequest, Outcome, ReleaseStockRequest, ReserveStockRequest, StockLevel,
};
use erp_tests::TestApp;
use erp_tests::process::{Instance, free_port};
use tonic::Request;
use tonic::transport::Channel;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn token(scope: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "pos-1", "scope": scope, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    format!("Bearer {t}")
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", token.parse().unwrap());
    r
}

#[test]
fn stock_is_checked_reserved_and_released_over_grpc_once_per_key() {
    let app = TestApp::new("grpc");
    let grpc_port = free_port();
    let dir = app.state_path().join("a");
    let a = Instance::spawn_with(
        &app,
        "a",
        &dir,
        &[
            ("ERP_GRPC_ADDR", &format!("127.0.0.1:{grpc_port}")),
            ("ERP_JWT_HS256_SECRET", SECRET),
        ],
    );
    a.wait_ready();
    let p = app.publisher();
    let mut rng = erp_connectors::sample::Rng::new(3);
    let products = erp_connectors::sample::products(&mut rng, 1, 10, 1);
    for c in &products {
        p.inventory(c).unwrap();
    }
    p.flush().unwrap();
    let sku = products[0].sku.clone();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = InventoryServiceClient::new(channel);
        let (reader, writer) = (token("erp:read"), token("erp:read erp:write"));
        let check = CheckStockRequest {
            skus: vec![sku.clone()],
        };
        let denied = client.check_stock(check.clone()).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::Unauthenticated, "{denied}");

        let mut level = StockLevel::default();
        for _ in 0..300 {
            level = client
                .check_stock(with_token(check.clone(), &reader))
                .await
                .unwrap()
                .into_inner()
                .items
                .remove(0);
            if level.found {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(level.found, "product {sku} registered");
        let stock = level.on_hand;
        assert_eq!((level.reserved, level.available), (0, stock));

        let reserve = |quantity: u32, key: &str| ReserveStockRequest {
            sku: sku.clone(),
            quantity,
            idempotency_key: key.into(),
            timeout_ms: 10_000,
        };
        let forbidden = client
            .reserve_stock(with_token(reserve(3, "k1"), &reader))
            .await
            .unwrap_err();
        assert_eq!(forbidden.code(), tonic::Code::PermissionDenied);

        let held = client
            .reserve_stock(with_token(reserve(3, "k1"), &writer))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(held.outcome(), Outcome::Reserved, "{held:?}");
        assert_eq!(held.quantity, 3);
        assert_eq!(held.allocations.values().sum::<u32>(), 3);
        // A retry with the same key: the same reservation, held once.
        let again = client
            .reserve_stock(with_token(reserve(3, "k1"), &writer))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.reservation_id, held.reservation_id);
        assert_eq!(again.outcome(), Outcome::Reserved);
        let level = client
            .check_stock(with_token(check.clone(), &reader))
            .await
            .unwrap()
            .into_inner()
            .items
            .remove(0);
        assert_eq!((level.reserved, level.available), (3, stock - 3));

        let too_many = client
            .reserve_stock(with_token(reserve(stock, "k2"), &writer))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(too_many.outcome(), Outcome::Rejected, "{too_many:?}");
        assert!(too_many.reason.contains("insufficient"), "{too_many:?}");

        let release = ReleaseStockRequest {
            sku: sku.clone(),
            reservation_id: held.reservation_id.clone(),
            reason: "customer left".into(),
            idempotency_key: "r1".into(),
            timeout_ms: 10_000,
        };
        let released = client
            .release_stock(with_token(release, &writer))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(released.outcome(), Outcome::Released, "{released:?}");
        assert_eq!(released.quantity, 3);
        let level = client
            .check_stock(with_token(check, &reader))
            .await
            .unwrap()
            .into_inner()
            .items
            .remove(0);
        assert_eq!((level.reserved, level.available), (0, stock));

        // Only a gRPC hold can be released here: another id (an order's, or nothing) is
        // refused with the reason, promptly.
        let stranger = ReleaseStockRequest {
            sku: sku.clone(),
            reservation_id: uuid::Uuid::new_v4().to_string(),
            reason: String::new(),
            idempotency_key: "r2".into(),
            timeout_ms: 10_000,
        };
        let refused = client
            .release_stock(with_token(stranger, &writer))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(refused.outcome(), Outcome::Rejected, "{refused:?}");
        assert!(refused.reason.contains("no hold"), "{refused:?}");

        let bad = client
            .reserve_stock(with_token(reserve(0, "k3"), &writer))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    });
    // The saga heard nothing: no order replies were written for these holds.
    let replies = app.read_raw(&app.topics.order_replies());
    assert_eq!(replies.len(), 0, "gRPC holds must not reach the order saga");
    a.stop();
}
