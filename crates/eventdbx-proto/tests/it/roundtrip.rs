//! Every union member of `ControlRequest` and `ControlResponse` round-trips with a value in every
//! field, sits at the tag and struct size EventDBX's layout gives, and the fields that layout
//! singles out sit at the data bits and pointer slots it names (`docs/protocol.md`, "Requests and
//! responses" and "Our extensions").
//!
//! The round trip walks the schema through capnp's reflection, so no field can be forgotten when
//! the schema grows; the raw-byte checks read the encoded message without the schema.

use capnp::dynamic_value;
use capnp::introspect::TypeVariant;
use eventdbx_proto::message::{self, decode_request, decode_response};

/// Request union members in ordinal order: tag = index = ordinal - 1.
const REQUEST_MEMBERS: [&str; 30] = [
    "listAggregates",
    "getAggregate",
    "listEvents",
    "appendEvent",
    "verifyAggregate",
    "patchEvent",
    "selectAggregate",
    "createAggregate",
    "setAggregateArchive",
    "listSchemas",
    "replaceSchemas",
    "tenantAssign",
    "tenantUnassign",
    "tenantQuotaSet",
    "tenantQuotaClear",
    "tenantQuotaRecalc",
    "tenantReload",
    "tenantSchemaPublish",
    "createSnapshot",
    "listSnapshots",
    "getSnapshot",
    "listReferrers",
    "readOutbox",
    "tenantList",
    "tenantSchemaHistory",
    "tenantSchemaActivate",
    "admin",
    "subscribe",
    "unsubscribe",
    "subscriptionAck",
];

/// Response union members in ordinal order: note `selectAggregate` @6 and `error` @7.
const RESPONSE_MEMBERS: [&str; 31] = [
    "listAggregates",
    "getAggregate",
    "listEvents",
    "appendEvent",
    "verifyAggregate",
    "selectAggregate",
    "error",
    "createAggregate",
    "setAggregateArchive",
    "listSchemas",
    "replaceSchemas",
    "tenantAssign",
    "tenantUnassign",
    "tenantQuotaSet",
    "tenantQuotaClear",
    "tenantQuotaRecalc",
    "tenantReload",
    "tenantSchemaPublish",
    "createSnapshot",
    "listSnapshots",
    "getSnapshot",
    "listReferrers",
    "readOutbox",
    "tenantList",
    "tenantSchemaHistory",
    "tenantSchemaActivate",
    "admin",
    "subscribe",
    "unsubscribe",
    "subscriptionAck",
    "subscriptionBatch",
];

/// (data bytes, pointers) of each request member's struct (writes with our extension).
const REQUEST_SIZES: [(usize, usize); 30] = [
    (16, 4),
    (8, 3),
    (16, 5),
    (16, 9),
    (0, 2),
    (16, 9),
    (0, 4),
    (16, 9),
    (8, 5),
    (0, 1),
    (0, 2),
    (0, 3),
    (0, 2),
    (8, 2),
    (0, 2),
    (0, 2),
    (0, 2),
    (8, 5),
    (8, 4),
    (16, 3),
    (8, 1),
    (0, 3),
    (24, 1),
    // Ours: tenantList, tenantSchemaHistory, tenantSchemaActivate.
    (0, 1),
    (0, 2),
    (8, 5),
    // Ours: admin.
    (0, 3),
    (24, 4),
    (8, 0),
    (16, 0),
];

/// (data bytes, pointers) of each response member's struct.
const RESPONSE_SIZES: [(usize, usize); 31] = [
    (8, 3),
    (8, 2),
    // listEvents: `positions` (ours) is its third pointer.
    (8, 3),
    (0, 1),
    (0, 1),
    (8, 1),
    (0, 2),
    (0, 1),
    (0, 1),
    (0, 1),
    (8, 0),
    (8, 1),
    (8, 0),
    (16, 0),
    (8, 0),
    (8, 0),
    (8, 0),
    (8, 1),
    (0, 1),
    (0, 1),
    (8, 1),
    (0, 1),
    // readOutbox: `positions` (ours) is its second pointer.
    (16, 2),
    // Ours: tenantList, tenantSchemaHistory, tenantSchemaActivate.
    (0, 1),
    (0, 1),
    (8, 2),
    // Ours: admin.
    (0, 1),
    (16, 0),
    (8, 0),
    (8, 0),
    (24, 1),
];

// ---------------------------------------------------------------------------------------------
// Filling and checking every field through reflection.

/// Hands out a distinct number per field, so that two fields sharing a slot would show.
struct Values(u64);

impl Values {
    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

fn text_value(name: &str, n: u64) -> String {
    format!("{name}-{n}")
}

/// Sets every field of `builder` (recursively) to a non-default value drawn from `values`.
fn fill(mut builder: capnp::dynamic_struct::Builder<'_>, values: &mut Values) {
    let schema = builder.get_schema();
    for field in schema.get_fields().expect("fields") {
        let name = field
            .get_proto()
            .get_name()
            .expect("name")
            .to_str()
            .expect("utf-8");
        let n = values.next();
        match field.get_type().which() {
            TypeVariant::Bool => set(&mut builder, field, dynamic_value::Reader::Bool(true)),
            TypeVariant::UInt16 => {
                set(&mut builder, field, dynamic_value::Reader::UInt16(n as u16))
            }
            TypeVariant::UInt32 => set(
                &mut builder,
                field,
                dynamic_value::Reader::UInt32(0x4000_0000 + n as u32),
            ),
            TypeVariant::UInt64 => set(
                &mut builder,
                field,
                dynamic_value::Reader::UInt64(0x0102_0304_0000_0000 + n),
            ),
            TypeVariant::Int32 => set(
                &mut builder,
                field,
                dynamic_value::Reader::Int32(-(n as i32)),
            ),
            TypeVariant::Text => {
                let text = text_value(name, n);
                set(
                    &mut builder,
                    field,
                    dynamic_value::Reader::Text(text.as_str().into()),
                );
            }
            TypeVariant::List(element) => {
                let list = builder.reborrow().initn(field, 2).expect("init list");
                let dynamic_value::Builder::List(mut list) = list else {
                    panic!("{name}: list field did not give a list builder");
                };
                for index in 0..2 {
                    match element.which() {
                        TypeVariant::Text => {
                            let text = text_value(name, n * 10 + u64::from(index));
                            list.set(index, dynamic_value::Reader::Text(text.as_str().into()))
                                .expect("set list text");
                        }
                        TypeVariant::UInt64 => list
                            .set(
                                index,
                                dynamic_value::Reader::UInt64(
                                    0x0102_0304_0000_0000 + n * 10 + u64::from(index),
                                ),
                            )
                            .expect("set list number"),
                        TypeVariant::Struct(_) => {
                            let dynamic_value::Builder::Struct(element) =
                                list.reborrow().get(index).expect("list element")
                            else {
                                panic!("{name}: struct list element is not a struct");
                            };
                            fill(element, values);
                        }
                        _ => panic!("{name}: list element type not used by the protocol"),
                    }
                }
            }
            _ => panic!("{name}: field type not used by the protocol messages"),
        }
    }
}

fn set(
    builder: &mut capnp::dynamic_struct::Builder<'_>,
    field: capnp::schema::Field,
    value: dynamic_value::Reader<'_>,
) {
    builder.set(field, value).expect("set field");
}

/// Asserts every field of `reader` holds what [`fill`] put there, drawing the same `values`.
fn check(reader: capnp::dynamic_struct::Reader<'_>, values: &mut Values, path: &str) {
    let schema = reader.get_schema();
    for field in schema.get_fields().expect("fields") {
        let name = field
            .get_proto()
            .get_name()
            .expect("name")
            .to_str()
            .expect("utf-8");
        let at = format!("{path}.{name}");
        let n = values.next();
        let value = reader.get(field).expect("read field");
        match (field.get_type().which(), value) {
            (TypeVariant::Bool, dynamic_value::Reader::Bool(v)) => assert!(v, "{at}"),
            (TypeVariant::UInt16, dynamic_value::Reader::UInt16(v)) => {
                assert_eq!(v, n as u16, "{at}")
            }
            (TypeVariant::UInt32, dynamic_value::Reader::UInt32(v)) => {
                assert_eq!(v, 0x4000_0000 + n as u32, "{at}")
            }
            (TypeVariant::UInt64, dynamic_value::Reader::UInt64(v)) => {
                assert_eq!(v, 0x0102_0304_0000_0000 + n, "{at}")
            }
            (TypeVariant::Int32, dynamic_value::Reader::Int32(v)) => {
                assert_eq!(v, -(n as i32), "{at}")
            }
            (TypeVariant::Text, dynamic_value::Reader::Text(v)) => {
                assert_eq!(v.to_str(), Ok(text_value(name, n).as_str()), "{at}")
            }
            (TypeVariant::List(element), dynamic_value::Reader::List(list)) => {
                assert_eq!(list.len(), 2, "{at}");
                for index in 0..2 {
                    match (element.which(), list.get(index).expect("list element")) {
                        (TypeVariant::Text, dynamic_value::Reader::Text(v)) => assert_eq!(
                            v.to_str(),
                            Ok(text_value(name, n * 10 + u64::from(index)).as_str()),
                            "{at}[{index}]"
                        ),
                        (TypeVariant::UInt64, dynamic_value::Reader::UInt64(v)) => assert_eq!(
                            v,
                            0x0102_0304_0000_0000 + n * 10 + u64::from(index),
                            "{at}[{index}]"
                        ),
                        (TypeVariant::Struct(_), dynamic_value::Reader::Struct(element)) => {
                            check(element, values, &format!("{at}[{index}]"))
                        }
                        _ => panic!("{at}[{index}]: unexpected element"),
                    }
                }
            }
            _ => panic!("{at}: value of an unexpected type"),
        }
    }
}

/// The union member fields of an envelope's `payload` group, in discriminant order.
fn payload_members(envelope: capnp::dynamic_struct::Builder<'_>) -> Vec<capnp::schema::Field> {
    let dynamic_value::Builder::Struct(payload) = envelope.get_named("payload").expect("payload")
    else {
        panic!("payload is not a group");
    };
    let mut members: Vec<_> = payload
        .get_schema()
        .get_union_fields()
        .expect("union fields")
        .iter()
        .collect();
    members.sort_by_key(|field| field.get_proto().get_discriminant_value());
    members
}

/// Encodes an envelope with id `id` whose payload is member `tag`, filled by [`fill`].
pub(crate) fn encode_member<T>(id: u64, tag: u16) -> Vec<u8>
where
    T: capnp::traits::Owned,
    for<'a> T::Builder<'a>: Into<dynamic_value::Builder<'a>>,
{
    message::encode::<T, _>(|root| {
        let dynamic_value::Builder::Struct(mut envelope) = root.into() else {
            panic!("envelope is not a struct");
        };
        envelope.set_named("id", dynamic_value::Reader::UInt64(id))?;
        let member = payload_members(envelope.reborrow())
            .into_iter()
            .find(|field| field.get_proto().get_discriminant_value() == tag)
            .expect("member with this tag");
        let dynamic_value::Builder::Struct(payload) = envelope.get_named("payload")? else {
            panic!("payload is not a group");
        };
        let dynamic_value::Builder::Struct(body) = payload.init(member)? else {
            panic!("member is not a struct");
        };
        fill(body, &mut Values(0));
        Ok(())
    })
    .expect("encode")
}

/// Checks a decoded envelope: id, member (by name) and every field of the member.
fn check_member(root: capnp::dynamic_struct::Reader<'_>, id: u64, tag: u16, name: &str) {
    assert_eq!(
        root.get_named("id").ok().map(|v| v.downcast::<u64>()),
        Some(id)
    );
    let dynamic_value::Reader::Struct(payload) = root.get_named("payload").expect("payload") else {
        panic!("payload is not a group");
    };
    let member = payload.which().expect("which").expect("a known member");
    assert_eq!(member.get_proto().get_discriminant_value(), tag);
    assert_eq!(
        member.get_proto().get_name().expect("name").to_str(),
        Ok(name)
    );
    let dynamic_value::Reader::Struct(body) = payload.get(member).expect("member") else {
        panic!("{name} is not a struct");
    };
    check(body, &mut Values(0), name);
}

// ---------------------------------------------------------------------------------------------
// Raw bytes, read without the schema.

fn word(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// Follows the struct pointer at byte `at` of a single-segment message: (data section, pointer
/// section offset, pointer count).
fn struct_at(bytes: &[u8], at: usize) -> (&[u8], usize, usize) {
    assert_eq!(&bytes[..4], &[0, 0, 0, 0], "single segment");
    let pointer = word(bytes, at);
    assert_eq!(pointer & 3, 0, "struct pointer at byte {at}");
    let offset = i64::from((pointer as u32 as i32) >> 2);
    let start = (at as i64 + 8 + offset * 8) as usize;
    let data_bytes = ((pointer >> 32) & 0xffff) as usize * 8;
    let pointers = (pointer >> 48) as usize;
    (
        &bytes[start..start + data_bytes],
        start + data_bytes,
        pointers,
    )
}

/// The payload member of an envelope: its data section, the offset of its pointers, their count.
fn member_struct(bytes: &[u8]) -> (&[u8], usize, usize) {
    // Table (8), root pointer (8), envelope data (16): the envelope's ptr 0 is at byte 32.
    let (envelope_data, _, _) = struct_at(bytes, 8);
    assert_eq!(envelope_data.len(), 16);
    struct_at(bytes, 32)
}

/// The text that the list pointer at byte `at` points to.
fn text_at(bytes: &[u8], at: usize) -> &str {
    let pointer = word(bytes, at);
    assert_eq!(pointer & 3, 1, "list pointer at byte {at}");
    assert_eq!((pointer >> 32) & 7, 2, "byte elements at {at}");
    let offset = i64::from((pointer as u32 as i32) >> 2);
    let start = (at as i64 + 8 + offset * 8) as usize;
    let len = (pointer >> 35) as usize;
    assert_eq!(bytes[start + len - 1], 0, "NUL terminator");
    std::str::from_utf8(&bytes[start..start + len - 1]).expect("utf-8")
}

fn u64_at(data: &[u8], bit: usize) -> u64 {
    word(data, bit / 8)
}

fn u32_at(data: &[u8], bit: usize) -> u32 {
    u32::from_le_bytes(data[bit / 8..bit / 8 + 4].try_into().expect("4 bytes"))
}

fn bit(data: &[u8], bit: usize) -> bool {
    data[bit / 8] >> (bit % 8) & 1 == 1
}

/// Only `bit` is set in the whole data section.
fn only_bit(data: &[u8], expected: usize) -> bool {
    (0..data.len() * 8).all(|b| bit(data, b) == (b == expected))
}

// ---------------------------------------------------------------------------------------------

#[test]
fn every_request_member_round_trips() {
    use eventdbx_proto::schema::control_capnp::control_request;
    let mut probe = capnp::message::Builder::new_default();
    let root: dynamic_value::Builder<'_> = probe.init_root::<control_request::Builder<'_>>().into();
    let dynamic_value::Builder::Struct(root) = root else {
        panic!("not a struct");
    };
    let members = payload_members(root);
    let names: Vec<_> = members
        .iter()
        .map(|f| {
            f.get_proto()
                .get_name()
                .expect("name")
                .to_str()
                .expect("utf-8")
        })
        .collect();
    assert_eq!(names, REQUEST_MEMBERS);

    for (index, member) in members.iter().enumerate() {
        let tag = member.get_proto().get_discriminant_value();
        assert_eq!(usize::from(tag), index);
        let id = 0x0a0b_0c0d_0000_0000 + u64::from(tag);
        let bytes = encode_member::<control_request::Owned>(id, tag);
        // The tag is bits 64-79 of the envelope: bytes 24..26 of the message (= ordinal - 1).
        assert_eq!(
            u16::from_le_bytes([bytes[24], bytes[25]]),
            tag,
            "{}",
            names[index]
        );
        assert_eq!(word(&bytes, 16), id);
        let (data, _, pointers) = member_struct(&bytes);
        assert_eq!(
            (data.len(), pointers),
            REQUEST_SIZES[index],
            "{}",
            names[index]
        );

        let decoded = decode_request(&bytes).expect("decode");
        let root: dynamic_value::Reader<'_> = decoded.get().expect("root").into();
        let dynamic_value::Reader::Struct(root) = root else {
            panic!("not a struct");
        };
        check_member(root, id, tag, names[index]);
    }
}

#[test]
fn every_response_member_round_trips() {
    use eventdbx_proto::schema::control_capnp::control_response;
    let mut probe = capnp::message::Builder::new_default();
    let root: dynamic_value::Builder<'_> =
        probe.init_root::<control_response::Builder<'_>>().into();
    let dynamic_value::Builder::Struct(root) = root else {
        panic!("not a struct");
    };
    let members = payload_members(root);
    let names: Vec<_> = members
        .iter()
        .map(|f| {
            f.get_proto()
                .get_name()
                .expect("name")
                .to_str()
                .expect("utf-8")
        })
        .collect();
    assert_eq!(names, RESPONSE_MEMBERS);

    for (index, member) in members.iter().enumerate() {
        let tag = member.get_proto().get_discriminant_value();
        assert_eq!(usize::from(tag), index);
        let id = u64::MAX - u64::from(tag);
        let bytes = encode_member::<control_response::Owned>(id, tag);
        assert_eq!(
            u16::from_le_bytes([bytes[24], bytes[25]]),
            tag,
            "{}",
            names[index]
        );
        assert_eq!(word(&bytes, 16), id);
        let (data, _, pointers) = member_struct(&bytes);
        assert_eq!(
            (data.len(), pointers),
            RESPONSE_SIZES[index],
            "{}",
            names[index]
        );

        let decoded = decode_response(&bytes).expect("decode");
        let root: dynamic_value::Reader<'_> = decoded.get().expect("root").into();
        let dynamic_value::Reader::Struct(root) = root else {
            panic!("not a struct");
        };
        check_member(root, id, tag, names[index]);
    }
}

#[test]
fn list_aggregates_request_layout() {
    const TAKE: u64 = 0x1122_3344_5566_7788;
    let bytes = message::encode_request(|request| {
        let mut list = request.init_payload().init_list_aggregates();
        list.set_take(TAKE);
        list.set_resolve_depth(0xdead_beef);
        list.set_cursor("c");
        list.set_filter("f");
        list.set_sort("s");
        list.set_token("t");
        Ok(())
    })
    .expect("encode");
    let (data, pointers_at, _) = member_struct(&bytes);
    assert_eq!(u64_at(data, 64), TAKE);
    assert_eq!(u32_at(data, 32), 0xdead_beef);
    assert_eq!(data[0], 0, "no flag set");
    for (slot, text) in ["c", "f", "s", "t"].iter().enumerate() {
        assert_eq!(text_at(&bytes, pointers_at + 8 * slot), *text);
    }

    // Each flag alone, in the order of `docs/protocol.md`: hasCursor .. hasResolveDepth at bits
    // 0..7.
    type Setter =
        fn(&mut eventdbx_proto::schema::control_capnp::list_aggregates_request::Builder<'_>);
    let flags: [Setter; 8] = [
        |b| b.set_has_cursor(true),
        |b| b.set_has_take(true),
        |b| b.set_has_filter(true),
        |b| b.set_has_sort(true),
        |b| b.set_include_archived(true),
        |b| b.set_archived_only(true),
        |b| b.set_resolve(true),
        |b| b.set_has_resolve_depth(true),
    ];
    for (expected_bit, set_flag) in flags.iter().enumerate() {
        let bytes = message::encode_request(|request| {
            set_flag(&mut request.init_payload().init_list_aggregates());
            Ok(())
        })
        .expect("encode");
        let (data, _, _) = member_struct(&bytes);
        assert!(only_bit(data, expected_bit), "flag {expected_bit}");
    }
}

#[test]
fn read_outbox_request_layout() {
    let bytes = message::encode_request(|request| {
        let mut outbox = request.init_payload().init_read_outbox();
        outbox.set_after_event_id(0x0101_0101_0101_0101);
        outbox.set_take(0x0202_0202_0202_0202);
        outbox.set_token("tok");
        Ok(())
    })
    .expect("encode");
    let (data, pointers_at, _) = member_struct(&bytes);
    assert_eq!(u64_at(data, 0), 0x0101_0101_0101_0101);
    assert_eq!(u64_at(data, 128), 0x0202_0202_0202_0202);
    assert_eq!(u64_at(data, 64), 0, "flags not set");
    assert_eq!(text_at(&bytes, pointers_at), "tok");

    for (expected_bit, has_after, has_take) in [(64, true, false), (65, false, true)] {
        let bytes = message::encode_request(|request| {
            let mut outbox = request.init_payload().init_read_outbox();
            outbox.set_has_after_event_id(has_after);
            outbox.set_has_take(has_take);
            Ok(())
        })
        .expect("encode");
        let (data, _, _) = member_struct(&bytes);
        assert!(only_bit(data, expected_bit), "bit {expected_bit}");
    }
}

/// Our extension: the three write requests put our extension in the same slots.
#[test]
fn write_request_extension_layout() {
    const VERSION: u64 = 0x8877_6655_4433_2211;
    let encode = |which: u8| {
        message::encode_request(|request| {
            let payload = request.init_payload();
            macro_rules! extension {
                ($builder:expr) => {{
                    let mut write = $builder;
                    write.set_expected_version(VERSION);
                    write.set_has_expected_version(true);
                    write.set_idempotency_key("key-1");
                    write.set_token("p0");
                    write.set_aggregate_type("p1");
                    write.set_aggregate_id("p2");
                    write.set_event_type("p3");
                    write.set_note("p5");
                    write.set_metadata_json("p6");
                }};
            }
            match which {
                0 => {
                    extension!(payload.init_append_event());
                }
                1 => {
                    extension!(payload.init_patch_event());
                }
                _ => {
                    extension!(payload.init_create_aggregate());
                }
            }
            Ok(())
        })
        .expect("encode")
    };
    for which in 0..3 {
        let bytes = encode(which);
        let (data, pointers_at, pointers) = member_struct(&bytes);
        assert_eq!((data.len(), pointers), (16, 9));
        assert_eq!(
            u64_at(data, 64),
            VERSION,
            "expectedVersion, request {which}"
        );
        assert!(
            only_bit(&data[..8], 3),
            "hasExpectedVersion, request {which}"
        );
        assert_eq!(
            text_at(&bytes, pointers_at + 8 * 8),
            "key-1",
            "request {which}"
        );
        for slot in [0, 1, 2, 3, 5, 6] {
            assert_eq!(text_at(&bytes, pointers_at + 8 * slot), format!("p{slot}"));
        }
    }
}

#[test]
fn tenant_quota_set_response_layout() {
    let bytes = message::encode_response(|response| {
        let mut quota = response.init_payload().init_tenant_quota_set();
        quota.set_quota_mb(0x0000_0001_0000_0400);
        quota.set_has_quota(true);
        Ok(())
    })
    .expect("encode");
    let (data, _, pointers) = member_struct(&bytes);
    assert_eq!((data.len(), pointers), (16, 0));
    assert_eq!(u64_at(data, 64), 0x0000_0001_0000_0400);
    assert!(
        only_bit(&data[..8], 1),
        "hasQuota is bit 1, changed (bit 0) unset"
    );
}

#[test]
fn publish_targets_are_structs_of_8_bytes_and_3_pointers() {
    let bytes = message::encode_request(|request| {
        let mut append = request.init_payload().init_append_event();
        append.set_has_publish_targets(true);
        let mut targets = append.init_publish_targets(1);
        let mut target = targets.reborrow().get(0);
        target.set_plugin("webhook");
        target.set_mode("async");
        target.set_has_mode(true);
        target.set_priority("high");
        target.set_has_priority(true);
        Ok(())
    })
    .expect("encode");
    let (data, pointers_at, _) = member_struct(&bytes);
    assert!(only_bit(&data[..8], 2), "hasPublishTargets is bit 2");
    // ptr 7: inline-composite list; its tag word gives the element size.
    let at = pointers_at + 7 * 8;
    let pointer = word(&bytes, at);
    assert_eq!(
        (pointer & 3, (pointer >> 32) & 7),
        (1, 7),
        "inline-composite list"
    );
    let tag_at = (at as i64 + 8 + i64::from((pointer as u32 as i32) >> 2) * 8) as usize;
    let tag = word(&bytes, tag_at);
    assert_eq!((tag >> 2) & 0x3fff_ffff, 1, "one element");
    assert_eq!(
        ((tag >> 32) & 0xffff, tag >> 48),
        (1, 3),
        "8 B data, 3 pointers"
    );
    let element_data = &bytes[tag_at + 8..tag_at + 16];
    assert!(bit(element_data, 0) && bit(element_data, 1));
    assert_eq!(text_at(&bytes, tag_at + 16), "webhook");
    assert_eq!(text_at(&bytes, tag_at + 24), "async");
    assert_eq!(text_at(&bytes, tag_at + 32), "high");
}
