//! The product README's quickstart, in Rust, against a running `dbx` server.
//!
//! Reads `EVENTDBX_HOST`, `EVENTDBX_PORT`, `EVENTDBX_TOKEN`, `EVENTDBX_TENANT_ID` and
//! `EVENTDBX_NO_NOISE` as the Python SDK does. The README's publish targets are left out: plugins
//! are not built yet, and our server refuses targets that name no configured plugin.
//!
//! ```sh
//! EVENTDBX_TOKEN=$(cat .dbx/cli.token) cargo run -p eventdbx-client --example quickstart
//! ```

use eventdbx_client::{Client, ClientConfig, EventsQuery, ListQuery, RetryOptions};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Result<()> {
    let mut config = ClientConfig::from_env()?;
    config.retry = RetryOptions::attempts(3);
    let client = Client::connect(config).await?;
    let fingerprint = client.server_fingerprint().await;
    println!(
        "connected over {:?}; server key {}",
        client.protocol().await,
        fingerprint.map_or("(none: v1)".to_owned(), |f| f.to_string())
    );

    // Unique ids per run, so the example can run against the same data directory again.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let order = format!("ord_{run}");
    let person = format!("p-{run}");

    let created = client
        .create("orders", &order, "created", r#"{"total": 42.15}"#)
        .await?;
    println!("create orders/{order}: {}", created.json);

    client
        .write(
            eventdbx_client::Write::create(
                "person",
                &person,
                "person_registered",
                r#"{"first_name": "Jaya", "last_name": "Singh", "email": "jaya@example.com"}"#,
            )
            .metadata_json(r#"{"@actor": "svc-directory", "note": "created by the quickstart"}"#),
        )
        .await?;
    client
        .apply(
            "person",
            &person,
            "person_email_updated",
            r#"{"email": "jaya.singh@example.com"}"#,
        )
        .await?;
    client
        .patch(
            "person",
            &person,
            "person_registered",
            r#"[{"op": "replace", "path": "/first_name", "value": "Jayah"}]"#,
        )
        .await?;
    client
        .archive("person", &person, Some("customer request"))
        .await?;
    client.restore("person", &person, None).await?;

    let latest = client.get("person", &person).await?;
    println!(
        "get person/{person}: {}",
        latest.json.as_deref().unwrap_or("(not found)")
    );
    let projection = client
        .select("person", &person, &["payload.email", "metadata.@actor"])
        .await?;
    println!(
        "select: {}",
        projection.json.as_deref().unwrap_or("(not found)")
    );

    let query = ListQuery::new()
        .take(25)
        .filter("person.archived = false AND person.last_name LIKE 'S%'")
        .sort("aggregate_id");
    let first_page = client.list(&query).await?;
    println!(
        "list: {} item(s), next cursor {:?}",
        first_page.aggregates()?.len(),
        first_page.next_cursor
    );
    if let Some(cursor) = &first_page.next_cursor {
        let next_page = client
            .list(&ListQuery::new().cursor(cursor.clone()))
            .await?;
        println!("next page: {} item(s)", next_page.aggregates()?.len());
    }
    let sorted = client
        .list(
            &ListQuery::new()
                .sort("created_at:desc,aggregate_id:asc")
                .take(2),
        )
        .await?;
    println!(
        "newest two: {} item(s), cursor {:?}",
        sorted.aggregates()?.len(),
        sorted.next_cursor
    );

    let mut history = EventsQuery::new("person", &person);
    history.take = Some(100);
    let events = client.events(&history).await?;
    println!("events: {} envelope(s)", events.events()?.len());
    let merkle_root = client.verify("person", &person).await?;
    println!("verify: merkle root {merkle_root}");

    let snapshot = client
        .create_snapshot("person", &person, Some("quickstart"))
        .await?;
    println!("snapshot: {}", snapshot.json);
    client.close().await;
    println!("quickstart ok");
    Ok(())
}
