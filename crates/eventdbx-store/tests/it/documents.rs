//! The PostgreSQL engine's control documents (`docs/storage.md`, "Several servers"): a write
//! conditioned on a revision is refused once another write came first, and read-modify-writes
//! from several engines on one database (as several servers) all land.

use std::sync::{Arc, Barrier};
use std::thread;

use eventdbx_store::documents::{update_document, ControlDocuments, Expected};
use eventdbx_store::Durability;
use eventdbx_store_postgres::cluster::TestCluster;
use eventdbx_store_postgres::PostgresConfig;

fn documents(url: &str) -> Arc<dyn ControlDocuments> {
    let mut config = PostgresConfig::new(url, Durability::Fsync);
    config.pool_size = 2;
    eventdbx_store_postgres::open_postgres_shared(&config)
        .expect("open the engine")
        .1
}

#[test]
fn a_write_prepared_from_an_old_revision_is_refused() {
    let url = TestCluster::shared().database("documents_cas");
    let docs = documents(&url);
    assert_eq!(docs.read("plugins.json").expect("read"), None);
    assert_eq!(
        docs.write("plugins.json", b"[]", Expected::Revision(1))
            .expect("write"),
        None
    );
    assert_eq!(
        docs.write("plugins.json", b"[]", Expected::Absent)
            .expect("write"),
        Some(1)
    );
    assert_eq!(
        docs.write("plugins.json", b"[1]", Expected::Absent)
            .expect("write"),
        None
    );
    assert_eq!(
        docs.write("plugins.json", b"[2]", Expected::Revision(1))
            .expect("write"),
        Some(2)
    );
    assert_eq!(
        docs.write("plugins.json", b"[3]", Expected::Revision(1))
            .expect("write"),
        None
    );
    assert_eq!(
        docs.write("plugins.json", b"[4]", Expected::Any)
            .expect("write"),
        Some(3)
    );
    assert_eq!(
        docs.write("auth/state", b"{}", Expected::Any)
            .expect("write"),
        Some(1)
    );
    let read = docs.read("plugins.json").expect("read").expect("present");
    assert_eq!((read.body.as_slice(), read.revision), (&b"[4]"[..], 3));
    let revisions = docs.revisions().expect("revisions");
    assert_eq!(
        revisions.into_iter().collect::<Vec<_>>(),
        vec![("auth/state".to_owned(), 1), ("plugins.json".to_owned(), 3)]
    );
}

#[test]
fn updates_from_several_servers_at_once_all_land() {
    const SERVERS: usize = 3;
    const EACH: usize = 10;
    let url = TestCluster::shared().database("documents_race");
    let servers: Vec<_> = (0..SERVERS).map(|_| documents(&url)).collect();
    let start = Arc::new(Barrier::new(SERVERS * 2));
    let workers: Vec<_> = (0..SERVERS * 2)
        .map(|w| {
            let (docs, start) = (Arc::clone(&servers[w % SERVERS]), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                for n in 0..EACH {
                    update_document(docs.as_ref(), "ledger", |body| {
                        let mut items: Vec<String> = match body {
                            Some(bytes) => serde_json::from_slice(bytes).expect("json"),
                            None => Vec::new(),
                        };
                        items.push(format!("{w}-{n}"));
                        Ok((Some(serde_json::to_vec(&items).expect("json")), ()))
                    })
                    .expect("update");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    let read = servers[0].read("ledger").expect("read").expect("present");
    let mut items: Vec<String> = serde_json::from_slice(&read.body).expect("json");
    items.sort();
    let mut expected: Vec<String> = (0..SERVERS * 2)
        .flat_map(|w| (0..EACH).map(move |n| format!("{w}-{n}")))
        .collect();
    expected.sort();
    assert_eq!(items, expected, "every update landed once");
    assert_eq!(read.revision, (SERVERS * 2 * EACH) as u64);
}
