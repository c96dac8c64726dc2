//! Pagination as `Stream`s: every item exactly once, across pages, for aggregates and events.

use std::pin::Pin;

use eventdbx_client::{Client, EventsQuery, ItemStream, ListQuery, Stream};
use serde_json::Value;

use crate::harness::TestServer;

/// Polls a stream to its end (no futures-util needed).
async fn collect<S: Send + Unpin + 'static>(mut stream: ItemStream<S>) -> Vec<Value> {
    let mut items = Vec::new();
    while let Some(item) = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
        items.push(item.expect("item"));
    }
    items
}

#[tokio::test(flavor = "multi_thread")]
async fn list_and_events_stream_every_item_across_pages() {
    let server = TestServer::start().await;
    let client = Client::connect(server.config()).await.expect("connect");
    for n in 0..7 {
        client
            .create(
                "order",
                &format!("o-{n}"),
                "order_created",
                &format!("{{\"n\": {n}}}"),
            )
            .await
            .expect("create");
    }
    for v in 0..11 {
        client
            .apply("order", "o-0", "order_updated", &format!("{{\"v\": {v}}}"))
            .await
            .expect("apply");
    }
    let aggregates = collect(
        client
            .list_pages(ListQuery::new().take(3).sort("aggregate_id:desc"))
            .into_stream(),
    )
    .await;
    let ids: Vec<&str> = aggregates
        .iter()
        .map(|a| a["aggregate_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["o-6", "o-5", "o-4", "o-3", "o-2", "o-1", "o-0"]);

    let mut query = EventsQuery::new("order", "o-0");
    query.take = Some(4);
    let events = collect(client.event_pages(query).into_stream()).await;
    let versions: Vec<u64> = events
        .iter()
        .map(|e| e["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(versions, (1..=12).collect::<Vec<u64>>());

    // An empty listing ends at once.
    let none = collect(
        client
            .list_pages(ListQuery::new().filter("aggregate_type = \"nothing\""))
            .into_stream(),
    )
    .await;
    assert!(none.is_empty());
}
