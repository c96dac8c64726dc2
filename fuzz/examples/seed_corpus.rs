//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`, from real messages:
//! the hellos and typed requests and replies the client and the server encode, the Noise
//! exchanges of an honest client, sample filters, sorts, cursors, patches and schemas.
//!
//! Run it after a format changes (`cargo run --manifest-path fuzz/Cargo.toml --example
//! seed_corpus`); it replaces only the `seed-*` files, so the inputs libFuzzer found and the
//! crash reproducers committed beside them stay.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use eventdbx_core::query::cursor::{AggregateCursor, EventCursor, KeysetCursor};
use eventdbx_core::query::sort::SortSpec;
use eventdbx_core::query::AggregateView;
use eventdbx_core::schema::dbx::compile;
use eventdbx_fuzz::identity;
use eventdbx_fuzz::records::{self, RAW, SEALED};
use eventdbx_proto::control::{
    ErrorResponse, GetAggregateRequest, ListAggregatesRequest, ListEventsRequest, PublishTarget,
    Reply, Request, SelectAggregateRequest, WriteRequest,
};
use eventdbx_proto::frame;
use eventdbx_proto::hello::{cli_rejection, Hello, HelloResponse};
use eventdbx_proto::plugin::{encode_envelope, PluginEnvelope, PluginEvent, PluginInit};
use serde_json::Map;

type Seeds = BTreeMap<&'static str, Vec<Vec<u8>>>;

const SCHEMA_DBX: &str = r#"# comments start with '#' or '//'
aggregate person {
  snapshot_threshold = 100
  hidden_fields = ["internal_notes"]
  field_locks = ["id"]
  field email { type = "text"  rules = {"required": true, "format": "email"} }
  field handle { type = "text"  rules = {"regex": ["^[a-z][a-z0-9_]{2,15}$"], "length": {"min": 3, "max": 16}} }
  field age { type = "integer" rules = {"range": {"min": "0", "max": "150"}} }
  field manager {
    type = "reference"
    rules = {"reference": {"aggregate_type": "person", "integrity": "strong", "cascade": "restrict"}}
  }
  field profile { type = "object"
    rules = {"properties": {"country": {"type": "text", "format": "country_code"}}} }
  event person_created { fields = ["email", "handle", "manager"]  note = "Initial import" }
  event person_updated {}
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut seeds = Seeds::new();
    protocol_seeds(&mut seeds)?;
    noise_seeds(&mut seeds);
    query_seeds(&mut seeds)?;
    document_seeds(&mut seeds)?;
    for (target, inputs) in seeds {
        write_target(&root.join(target), &inputs)?;
    }
    Ok(())
}

fn write_target(dir: &Path, inputs: &[Vec<u8>]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"))
        {
            fs::remove_file(path)?;
        }
    }
    for (index, input) in inputs.iter().enumerate() {
        fs::write(dir.join(format!("seed-{index:02}")), input)?;
    }
    Ok(())
}

fn requests() -> Vec<Request> {
    let token = "eyJhbGciOiJFZERTQSJ9.e30.c2ln".to_owned();
    let write = WriteRequest {
        token: token.clone(),
        aggregate_type: "person".into(),
        aggregate_id: "p-1".into(),
        event_type: "person_created".into(),
        body_json: r#"{"email":"ada@example.com","age":36}"#.into(),
        note: Some("import".into()),
        metadata_json: Some(r#"{"source":"crm"}"#.into()),
        publish_targets: Some(vec![PublishTarget {
            plugin: "search".into(),
            mode: Some("event-only".into()),
            priority: Some("high".into()),
        }]),
        expected_version: Some(0),
        idempotency_key: Some("k-1".into()),
    };
    vec![
        Request::ListAggregates(ListAggregatesRequest {
            token: token.clone(),
            cursor: Some("a:person:p-1".into()),
            take: Some(50),
            filter: Some("age >= 18 AND name LIKE 'A%'".into()),
            sort: Some("created_at:desc".into()),
            include_archived: true,
            resolve: true,
            resolve_depth: Some(2),
            ..ListAggregatesRequest::default()
        }),
        Request::GetAggregate(GetAggregateRequest {
            token: token.clone(),
            aggregate_type: "person".into(),
            aggregate_id: "p-1".into(),
            ..GetAggregateRequest::default()
        }),
        Request::ListEvents(ListEventsRequest {
            token: token.clone(),
            aggregate_type: "person".into(),
            aggregate_id: "p-1".into(),
            cursor: Some("a:person:p-1:3".into()),
            take: Some(10),
            filter: Some("event_type = 'person_created'".into()),
        }),
        Request::SelectAggregate(SelectAggregateRequest {
            token,
            aggregate_type: "person".into(),
            aggregate_id: "p-1".into(),
            fields: vec!["email".into(), "profile.country".into()],
        }),
        Request::AppendEvent(write.clone()),
        Request::PatchEvent(WriteRequest {
            body_json: r#"[{"op":"replace","path":"/age","value":37}]"#.into(),
            ..write.clone()
        }),
        Request::CreateAggregate(write),
    ]
}

fn protocol_seeds(seeds: &mut Seeds) -> Result<(), Box<dyn std::error::Error>> {
    let hellos = vec![
        Hello {
            protocol_version: 1,
            token: "tok".into(),
            tenant_id: "default".into(),
            no_noise: false,
        }
        .encode(),
        Hello {
            protocol_version: 1,
            token: "tok".into(),
            tenant_id: String::new(),
            no_noise: true,
        }
        .encode(),
        Hello {
            protocol_version: 2,
            ..Hello::default()
        }
        .encode(),
        HelloResponse::ok(false).encode(),
        HelloResponse {
            capabilities: vec!["expected_version".into(), "events_filter".into()],
            ..HelloResponse::rejected("invalid control token", true)
        }
        .encode(),
        cli_rejection(),
    ];
    seeds.insert("hello", hellos);

    let requests = requests();
    let encoded: Vec<Vec<u8>> = requests
        .iter()
        .enumerate()
        .map(|(id, request)| request.encode(id as u64 + 1))
        .collect::<Result<_, _>>()?;
    seeds.insert("control_request", encoded.clone());

    let replies = vec![
        Reply::Error(ErrorResponse {
            code: "invalid_schema".into(),
            message: "bad filter".into(),
        })
        .encode(7)?,
        Reply::ListAggregates(eventdbx_proto::control::ListAggregatesResponse {
            aggregates_json: r#"[{"aggregateType":"person","aggregateId":"p-1","version":3}]"#
                .into(),
            next_cursor: Some("a:person:p-1".into()),
            resolved_json: None,
        })
        .encode(8)?,
        Reply::AppendEvent(eventdbx_proto::control::AppendEventResponse {
            event_json: r#"{"version":4}"#.into(),
        })
        .encode(9)?,
    ];
    seeds.insert("control_reply", replies);

    // Frames: a knob byte, then a stream of frames (whole, and cut).
    let mut stream = Vec::new();
    for payload in encoded.iter().take(2) {
        frame::encode_into(payload, frame::V1_MAX_NOISE_FRAME, &mut stream)?;
    }
    let mut frames = vec![
        [&[0x47u8][..], &stream].concat(),
        [&[0x40u8][..], &stream[..stream.len() - 5]].concat(),
    ];
    frames.push([&[0x03u8][..], &frame::encode(b"small", 64)?].concat());
    frames.push(vec![0x00, 0x00, 0x00, 0x01, 0x00]);
    seeds.insert("frame", frames);

    let envelopes = [
        PluginEnvelope::Init(PluginInit {
            plugin_name: "search".into(),
            version: "1.0.0".into(),
            target: "linux-x86_64".into(),
        }),
        PluginEnvelope::Event(PluginEvent {
            sequence: 1,
            aggregate_type: "person".into(),
            aggregate_id: "p-1".into(),
            event_type: "person_created".into(),
            event_version: 1,
            event_id: "7398164318138368".into(),
            payload_json: r#"{"email":"ada@example.com"}"#.into(),
            metadata_json: "{}".into(),
            state_entries: vec![("email".into(), r#""ada@example.com""#.into())],
            schema_json: "null".into(),
            extensions_json: "null".into(),
            ..PluginEvent::default()
        }),
        PluginEnvelope::Ack { sequence: 1 },
        PluginEnvelope::Error {
            sequence: 2,
            message: "downstream unavailable".into(),
        },
    ];
    let mut plugin = Vec::new();
    for (knob, envelope) in [7u8, 255, 1, 64].into_iter().zip(&envelopes) {
        plugin.push([&[knob][..], &encode_envelope(envelope)].concat());
    }
    // A child's stdout: two acks and an error back to back.
    let acks: Vec<u8> = [&envelopes[2], &envelopes[3], &envelopes[2]]
        .iter()
        .flat_map(|e| encode_envelope(e))
        .collect();
    plugin.push([&[5u8][..], &acks].concat());
    seeds.insert("plugin_envelope", plugin);
    Ok(())
}

fn noise_seeds(seeds: &mut Seeds) {
    let (msg1, msg3) = identity::v2_honest_payloads();
    let requests = requests();
    let first = requests
        .first()
        .and_then(|r| r.encode(1).ok())
        .unwrap_or_default();
    let chunk = |flags: u8, total: Option<u32>, data: &[u8]| {
        let mut plaintext = vec![flags];
        if let Some(total) = total {
            plaintext.extend_from_slice(&total.to_be_bytes());
        }
        plaintext.extend_from_slice(data);
        plaintext
    };
    let whole = chunk(0b11, Some(first.len() as u32), &first);
    let (head, tail) = first.split_at(first.len() / 2);
    let part1 = chunk(0b01, Some(first.len() as u32), head);
    let part2 = chunk(0b10, None, tail);
    seeds.insert(
        "noise_v2",
        vec![
            records::encode(&[(SEALED, &msg1), (SEALED, &msg3), (SEALED, &whole)]),
            records::encode(&[
                (SEALED, &msg1),
                (SEALED, &msg3),
                (SEALED, &part1),
                (SEALED, &part2),
            ]),
            records::encode(&[
                (SEALED, &msg1),
                (SEALED, &msg3),
                (SEALED, &chunk(0b01, Some(u32::MAX), b"")),
            ]),
            records::encode(&[(SEALED, &msg1), (RAW, &[0u8; 96])]),
            records::encode(&[(RAW, &[0u8; 48])]),
        ],
    );
    seeds.insert(
        "noise_v1",
        vec![
            records::encode(&[(SEALED, b""), (SEALED, &first)]),
            records::encode(&[(SEALED, b""), (SEALED, &first), (RAW, &[0u8; 32])]),
            records::encode(&[(SEALED, b"payload")]),
            records::encode(&[(RAW, &[0u8; 48])]),
        ],
    );
}

fn query_seeds(seeds: &mut Seeds) -> Result<(), Box<dyn std::error::Error>> {
    let filters = [
        "age >= 18 AND name LIKE 'A%'",
        "person.archived = false AND person.last_name LIKE 'S%'",
        "(status = 'active' OR status IN ('new', 'trial')) AND NOT score < 1.5",
        "`odd name` != null",
        "s LIKE 'x!%' ESCAPE '!'",
        "metadata.amount = 5 OR event_id = 7398164318138368",
        "created_at > 1700000000000 AND tags = 'a'",
    ];
    seeds.insert(
        "filter",
        filters.iter().map(|f| f.as_bytes().to_vec()).collect(),
    );
    let sorts = [
        " CreatedAt : DESC , aggregateid ",
        "created_at:desc,aggregate_id:asc",
        "version",
        "updated_at:asc,aggregate_type:desc",
    ];
    seeds.insert(
        "sort",
        sorts.iter().map(|s| s.as_bytes().to_vec()).collect(),
    );

    let state = Map::new();
    let extensions = Map::new();
    let view = AggregateView {
        aggregate_type: "person",
        aggregate_id: "p-1",
        version: 3,
        archived: false,
        created_at: Some(1_700_000_000_000),
        updated_at: Some(1_700_000_000_500),
        merkle_root: "ab",
        state: &state,
        extensions: &extensions,
    };
    let keyset = AggregateCursor::Keyset(KeysetCursor::after(
        &SortSpec::parse("version:desc,created_at")?,
        &view,
    ));
    let mut cursors: Vec<String> = [
        "a:person:p-1",
        "archived:person:p-1",
        "ts:updated:desc:a:1700000000000:person:p-1",
        "ts:person:p-1",
        " r:order:o-1:7 ",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    cursors.push(keyset.to_string());
    cursors.push(EventCursor::after("person", "p-1", true, 9).to_string());
    seeds.insert(
        "cursor",
        cursors.into_iter().map(String::into_bytes).collect(),
    );
    Ok(())
}

fn document_seeds(seeds: &mut Seeds) -> Result<(), Box<dyn std::error::Error>> {
    let patches = [
        r#"{"name":"Ada","age":36,"tags":["a","b"],"profile":{"country":"GB"}}
[{"op":"replace","path":"/age","value":37},{"op":"add","path":"/tags/-","value":"c"}]"#,
        r#"{"a":{"b~c":[1,2]}}
[{"op":"test","path":"/a/b~0c/1","value":2.0},{"op":"move","from":"/a/b~0c","path":"/d"},{"op":"copy","from":"/d","path":"/a/e"}]"#,
        r#"{"x":1}
[{"op":"remove","path":"/x"}]"#,
        r#"[1,2,3]
[{"op":"add","path":"/1","value":{"k":null}},{"op":"remove","path":"/0"}]"#,
        r#"{"k":1}
[{"op":"add","path":"/n","value":1},{"op":"remove","path":"/n"},{"op":"replace","path":"/k","value":[]}]"#,
    ];
    seeds.insert(
        "patch",
        patches.iter().map(|p| p.as_bytes().to_vec()).collect(),
    );

    let minimal =
        "aggregate order {\n  field total { type = \"decimal\" }\n  event order_placed {}\n}\n";
    seeds.insert(
        "schema_dbx",
        vec![SCHEMA_DBX.as_bytes().to_vec(), minimal.as_bytes().to_vec()],
    );

    let map = compile(SCHEMA_DBX, None, "2026-01-02T03:04:05Z")?;
    let json = map.to_json();
    let payloads = [
        r#"{"email":"ada@example.com","handle":"ada_l","manager":"p-2","age":36}"#,
        r#"{"email":"not an email","handle":"X","age":-1,"profile":{"country":"ZZ"}}"#,
    ];
    seeds.insert(
        "schema_json",
        payloads
            .iter()
            .map(|p| format!("{json}\n{p}").into_bytes())
            .collect(),
    );
    Ok(())
}
