//! Round trips: every request and reply decodes to what was encoded, through whole messages
//! (so the union member and the id travel too).

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use super::*;

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..4)
}

fn target() -> impl Strategy<Value = PublishTarget> {
    (text(), of(text()), of(text())).prop_map(|(plugin, mode, priority)| PublishTarget {
        plugin,
        mode,
        priority,
    })
}

fn write() -> impl Strategy<Value = WriteRequest> {
    (
        (text(), text(), text(), text(), text()),
        (of(text()), of(text()), of(vec(target(), 0..3))),
        (of(any::<u64>()), of("[ -~]{1,16}")),
    )
        .prop_map(
            |(
                (token, aggregate_type, aggregate_id, event_type, body_json),
                (note, metadata_json, publish_targets),
                (expected_version, idempotency_key),
            )| WriteRequest {
                token,
                aggregate_type,
                aggregate_id,
                event_type,
                body_json,
                note,
                metadata_json,
                publish_targets,
                expected_version,
                idempotency_key,
            },
        )
}

fn aggregate_requests() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            (text(), of(text()), of(any::<u64>()), of(text()), of(text())),
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                of(any::<u32>())
            ),
        )
            .prop_map(
                |(
                    (token, cursor, take, filter, sort),
                    (include_archived, archived_only, resolve, resolve_depth),
                )| {
                    Request::ListAggregates(ListAggregatesRequest {
                        token,
                        cursor,
                        take,
                        filter,
                        sort,
                        include_archived,
                        archived_only,
                        resolve,
                        resolve_depth,
                    })
                }
            ),
        (text(), text(), text(), any::<bool>(), of(any::<u32>())).prop_map(
            |(token, aggregate_type, aggregate_id, resolve, resolve_depth)| {
                Request::GetAggregate(GetAggregateRequest {
                    token,
                    aggregate_type,
                    aggregate_id,
                    resolve,
                    resolve_depth,
                })
            }
        ),
        (text(), text(), text(), texts()).prop_map(
            |(token, aggregate_type, aggregate_id, fields)| {
                Request::SelectAggregate(SelectAggregateRequest {
                    token,
                    aggregate_type,
                    aggregate_id,
                    fields,
                })
            }
        ),
        (text(), text()).prop_map(|(aggregate_type, aggregate_id)| {
            Request::VerifyAggregate(VerifyAggregateRequest {
                aggregate_type,
                aggregate_id,
            })
        }),
        (text(), text(), text()).prop_map(|(token, aggregate_type, aggregate_id)| {
            Request::ListReferrers(ListReferrersRequest {
                token,
                aggregate_type,
                aggregate_id,
            })
        }),
        (
            text(),
            text(),
            text(),
            of(text()),
            of(any::<u64>()),
            of(text())
        )
            .prop_map(
                |(token, aggregate_type, aggregate_id, cursor, take, filter)| {
                    Request::ListEvents(ListEventsRequest {
                        token,
                        aggregate_type,
                        aggregate_id,
                        cursor,
                        take,
                        filter,
                    })
                }
            ),
        (text(), of(any::<u64>()), of(any::<u64>())).prop_map(|(token, after_event_id, take)| {
            Request::ReadOutbox(ReadOutboxRequest {
                token,
                after_event_id,
                take,
            })
        }),
    ]
}

fn write_requests() -> impl Strategy<Value = Request> {
    prop_oneof![
        write().prop_map(Request::AppendEvent),
        write().prop_map(Request::PatchEvent),
        write().prop_map(Request::CreateAggregate),
        (
            (text(), text(), text(), any::<bool>()),
            (of(text()), of(vec(target(), 0..3)))
        )
            .prop_map(
                |((token, aggregate_type, aggregate_id, archived), (note, publish_targets))| {
                    Request::SetAggregateArchive(SetAggregateArchiveRequest {
                        token,
                        aggregate_type,
                        aggregate_id,
                        archived,
                        note,
                        publish_targets,
                    })
                }
            ),
        (text(), text(), text(), of(text())).prop_map(
            |(token, aggregate_type, aggregate_id, comment)| {
                Request::CreateSnapshot(CreateSnapshotRequest {
                    token,
                    aggregate_type,
                    aggregate_id,
                    comment,
                })
            }
        ),
        (text(), of(text()), of(text()), of(any::<u64>())).prop_map(
            |(token, aggregate_type, aggregate_id, version)| {
                Request::ListSnapshots(ListSnapshotsRequest {
                    token,
                    aggregate_type,
                    aggregate_id,
                    version,
                })
            }
        ),
        (text(), any::<u64>()).prop_map(|(token, snapshot_id)| {
            Request::GetSnapshot(GetSnapshotRequest { token, snapshot_id })
        }),
        (text(), text(), text()).prop_map(|(token, action, args_json)| {
            Request::Admin(AdminRequest {
                token,
                action,
                args_json,
            })
        }),
    ]
}

fn tenant_requests() -> impl Strategy<Value = Request> {
    prop_oneof![
        text().prop_map(|token| Request::ListSchemas(ListSchemasRequest { token })),
        (text(), text()).prop_map(|(token, schemas_json)| {
            Request::ReplaceSchemas(ReplaceSchemasRequest {
                token,
                schemas_json,
            })
        }),
        (text(), text(), text()).prop_map(|(token, tenant_id, shard_id)| {
            Request::TenantAssign(TenantAssignRequest {
                token,
                tenant_id,
                shard_id,
            })
        }),
        (text(), text()).prop_map(|(token, tenant_id)| {
            Request::TenantUnassign(TenantUnassignRequest { token, tenant_id })
        }),
        (text(), text(), any::<u64>()).prop_map(|(token, tenant_id, max_storage_mb)| {
            Request::TenantQuotaSet(TenantQuotaSetRequest {
                token,
                tenant_id,
                max_storage_mb,
            })
        }),
        (text(), text()).prop_map(|(token, tenant_id)| {
            Request::TenantQuotaClear(TenantQuotaClearRequest { token, tenant_id })
        }),
        (text(), text()).prop_map(|(token, tenant_id)| {
            Request::TenantQuotaRecalc(TenantQuotaRecalcRequest { token, tenant_id })
        }),
        (text(), text()).prop_map(|(token, tenant_id)| {
            Request::TenantReload(TenantReloadRequest { token, tenant_id })
        }),
        (
            (text(), text(), of(text()), of(text()), texts()),
            (any::<bool>(), any::<bool>(), any::<bool>())
        )
            .prop_map(
                |((token, tenant_id, reason, actor, labels), (activate, force, reload))| {
                    Request::TenantSchemaPublish(TenantSchemaPublishRequest {
                        token,
                        tenant_id,
                        reason,
                        actor,
                        labels,
                        activate,
                        force,
                        reload,
                    })
                }
            ),
        text().prop_map(|token| Request::TenantList(TenantListRequest { token })),
        (text(), text()).prop_map(|(token, tenant_id)| {
            Request::TenantSchemaHistory(TenantSchemaHistoryRequest { token, tenant_id })
        }),
        (text(), text(), text(), of(text()), of(text())).prop_map(
            |(token, tenant_id, version_id, reason, actor)| {
                Request::TenantSchemaActivate(TenantSchemaActivateRequest {
                    token,
                    tenant_id,
                    version_id,
                    reason,
                    actor,
                })
            }
        ),
    ]
}

fn subscription_requests() -> impl Strategy<Value = Request> {
    let start = prop_oneof![
        Just(SubscriptionStart::Beginning),
        Just(SubscriptionStart::End),
        (1..u64::MAX).prop_map(SubscriptionStart::After),
    ];
    prop_oneof![
        (
            (text(), start, of(text()), of(text())),
            (texts(), any::<u32>(), any::<u32>())
        )
            .prop_map(
                |(
                    (token, start, aggregate_type, aggregate_id),
                    (event_types, batch_size, credit_window),
                )| {
                    Request::Subscribe(SubscribeRequest {
                        token,
                        start,
                        aggregate_type,
                        aggregate_id,
                        event_types,
                        batch_size,
                        credit_window,
                    })
                }
            ),
        any::<u64>().prop_map(|subscription_id| {
            Request::Unsubscribe(UnsubscribeRequest { subscription_id })
        }),
        (any::<u64>(), any::<u32>()).prop_map(|(subscription_id, batches)| {
            Request::SubscriptionAck(SubscriptionAckRequest {
                subscription_id,
                batches,
            })
        }),
    ]
}

fn requests() -> impl Strategy<Value = Request> {
    prop_oneof![
        aggregate_requests(),
        write_requests(),
        tenant_requests(),
        subscription_requests()
    ]
}

fn read_replies() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (text(), of(text()), of(text())).prop_map(
            |(aggregates_json, next_cursor, resolved_json)| {
                Reply::ListAggregates(ListAggregatesResponse {
                    aggregates_json,
                    next_cursor,
                    resolved_json,
                })
            }
        ),
        (of(text()), of(text())).prop_map(|(aggregate_json, resolved_json)| {
            Reply::GetAggregate(GetAggregateResponse {
                aggregate_json,
                resolved_json,
            })
        }),
        of(text()).prop_map(|selection_json| {
            Reply::SelectAggregate(SelectAggregateResponse { selection_json })
        }),
        text().prop_map(|merkle_root| {
            Reply::VerifyAggregate(VerifyAggregateResponse { merkle_root })
        }),
        text().prop_map(|referrers_json| {
            Reply::ListReferrers(ListReferrersResponse { referrers_json })
        }),
        (text(), of(text()), of(vec(any::<u64>(), 0..4))).prop_map(
            |(events_json, next_cursor, positions)| {
                Reply::ListEvents(ListEventsResponse {
                    events_json,
                    next_cursor,
                    positions,
                })
            }
        ),
        (text(), of(any::<u64>()), of(vec(any::<u64>(), 0..4))).prop_map(
            |(events_json, next_after_event_id, positions)| {
                Reply::ReadOutbox(ReadOutboxResponse {
                    events_json,
                    next_after_event_id,
                    positions,
                })
            }
        ),
        (text(), text()).prop_map(|(code, message)| Reply::Error(ErrorResponse { code, message })),
        text().prop_map(|snapshots_json| {
            Reply::ListSnapshots(ListSnapshotsResponse { snapshots_json })
        }),
        of(text())
            .prop_map(|snapshot_json| Reply::GetSnapshot(GetSnapshotResponse { snapshot_json })),
        text().prop_map(|schemas_json| Reply::ListSchemas(ListSchemasResponse { schemas_json })),
    ]
}

fn write_replies() -> impl Strategy<Value = Reply> {
    prop_oneof![
        text().prop_map(|event_json| Reply::AppendEvent(AppendEventResponse { event_json })),
        text().prop_map(|aggregate_json| {
            Reply::CreateAggregate(CreateAggregateResponse { aggregate_json })
        }),
        text().prop_map(|aggregate_json| {
            Reply::SetAggregateArchive(SetAggregateArchiveResponse { aggregate_json })
        }),
        text().prop_map(|snapshot_json| {
            Reply::CreateSnapshot(CreateSnapshotResponse { snapshot_json })
        }),
        text().prop_map(|result_json| Reply::Admin(AdminResponse { result_json })),
        any::<u32>()
            .prop_map(|replaced| Reply::ReplaceSchemas(ReplaceSchemasResponse { replaced })),
    ]
}

fn tenant_replies() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (any::<bool>(), text()).prop_map(|(changed, shard_id)| {
            Reply::TenantAssign(TenantAssignResponse { changed, shard_id })
        }),
        any::<bool>().prop_map(|changed| Reply::TenantUnassign(TenantUnassignResponse { changed })),
        (any::<bool>(), of(any::<u64>())).prop_map(|(changed, quota_mb)| {
            Reply::TenantQuotaSet(TenantQuotaSetResponse { changed, quota_mb })
        }),
        any::<bool>()
            .prop_map(|changed| Reply::TenantQuotaClear(TenantQuotaClearResponse { changed })),
        any::<u64>().prop_map(|storage_bytes| {
            Reply::TenantQuotaRecalc(TenantQuotaRecalcResponse { storage_bytes })
        }),
        any::<bool>().prop_map(|reloaded| Reply::TenantReload(TenantReloadResponse { reloaded })),
        (text(), any::<bool>(), any::<bool>()).prop_map(|(version_id, activated, skipped)| {
            Reply::TenantSchemaPublish(TenantSchemaPublishResponse {
                version_id,
                activated,
                skipped,
            })
        }),
        text().prop_map(|tenants_json| Reply::TenantList(TenantListResponse { tenants_json })),
        text().prop_map(|manifest_json| {
            Reply::TenantSchemaHistory(TenantSchemaHistoryResponse { manifest_json })
        }),
        (text(), any::<bool>(), text()).prop_map(|(version_id, activated, action)| {
            Reply::TenantSchemaActivate(TenantSchemaActivateResponse {
                version_id,
                activated,
                action,
            })
        }),
    ]
}

fn subscription_replies() -> impl Strategy<Value = Reply> {
    let event = (any::<u64>(), text()).prop_map(|(position, event_json)| SubscribedEvent {
        position,
        event_json,
    });
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(subscription_id, start_position)| {
            Reply::Subscribe(SubscribeResponse {
                subscription_id,
                start_position,
            })
        }),
        any::<bool>().prop_map(|found| Reply::Unsubscribe(UnsubscribeResponse { found })),
        any::<bool>().prop_map(|found| Reply::SubscriptionAck(SubscriptionAckResponse { found })),
        (any::<u64>(), vec(event, 0..4), any::<u64>(), any::<u64>()).prop_map(
            |(subscription_id, events, head, last_position)| {
                Reply::SubscriptionBatch(SubscriptionBatch {
                    subscription_id,
                    events,
                    head,
                    last_position,
                })
            }
        ),
    ]
}

fn replies() -> impl Strategy<Value = Reply> {
    prop_oneof![
        read_replies(),
        write_replies(),
        tenant_replies(),
        subscription_replies()
    ]
}

proptest! {
    #[test]
    fn requests_round_trip(id in any::<u64>(), request in requests()) {
        let bytes = request.encode(id).expect("encode");
        let (decoded_id, decoded) = decode_request(&bytes).expect("a ControlRequest");
        prop_assert_eq!(decoded_id, id);
        prop_assert_eq!(decoded.expect("a known member"), request);
    }

    #[test]
    fn replies_round_trip(id in any::<u64>(), reply in replies()) {
        let bytes = reply.encode(id).expect("encode");
        prop_assert_eq!(decode_reply(&bytes).expect("a ControlResponse"), (id, reply));
    }
}

#[test]
fn an_empty_idempotency_key_reads_as_absent() {
    let request = Request::AppendEvent(WriteRequest {
        idempotency_key: Some(String::new()),
        ..WriteRequest::default()
    });
    let (_, decoded) = decode_request(&request.encode(1).expect("encode")).expect("decode");
    let Ok(Request::AppendEvent(write)) = decoded else {
        panic!("not an append: {decoded:?}");
    };
    assert_eq!(write.idempotency_key, None);
}

#[test]
fn empty_labels_are_not_sent() {
    // Byte-identical to the hand-built request the client sent before: no labels pointer at all.
    let typed = Request::TenantSchemaPublish(TenantSchemaPublishRequest {
        token: "t".into(),
        tenant_id: "acme".into(),
        activate: true,
        ..TenantSchemaPublishRequest::default()
    })
    .encode(3)
    .expect("encode");
    let by_hand = message::encode_request(|mut request| {
        request.set_id(3);
        let mut r = request.init_payload().init_tenant_schema_publish();
        r.set_token("t");
        r.set_tenant_id("acme");
        r.set_activate(true);
        Ok(())
    })
    .expect("encode");
    assert_eq!(typed, by_hand);
}

#[test]
fn a_full_write_is_byte_identical_to_the_hand_built_one() {
    let typed = Request::PatchEvent(WriteRequest {
        token: "t".into(),
        aggregate_type: "order".into(),
        aggregate_id: "o-1".into(),
        event_type: "order_patched".into(),
        body_json: "[]".into(),
        note: Some("n".into()),
        metadata_json: Some("{}".into()),
        publish_targets: Some(vec![PublishTarget {
            plugin: "search".into(),
            mode: None,
            priority: Some("high".into()),
        }]),
        expected_version: Some(3),
        idempotency_key: Some("k".into()),
    })
    .encode(2)
    .expect("encode");
    // The order and the fields the client set by hand before the typed messages existed.
    let by_hand = message::encode_request(|mut request| {
        request.set_id(2);
        let mut r = request.init_payload().init_patch_event();
        r.set_token("t");
        r.set_aggregate_type("order");
        r.set_aggregate_id("o-1");
        r.set_event_type("order_patched");
        r.set_patch_json("[]");
        r.set_note("n");
        r.set_has_note(true);
        r.set_metadata_json("{}");
        r.set_has_metadata(true);
        r.set_expected_version(3);
        r.set_has_expected_version(true);
        r.set_idempotency_key("k");
        r.set_has_publish_targets(true);
        let mut target = r.init_publish_targets(1).get(0);
        target.set_plugin("search");
        target.set_priority("high");
        target.set_has_priority(true);
        Ok(())
    })
    .expect("encode");
    assert_eq!(typed, by_hand);
}

#[test]
fn replies_keep_the_reference_defaults() {
    // No next page: an empty cursor text is still sent, with the flag off.
    let typed = Reply::ListEvents(ListEventsResponse {
        events_json: "[]".into(),
        next_cursor: None,
        positions: None,
    })
    .encode(4)
    .expect("encode");
    let by_hand = message::encode_response(|mut response| {
        response.set_id(4);
        let mut r = response.init_payload().init_list_events();
        r.set_events_json("[]");
        r.set_next_cursor("");
        Ok(())
    })
    .expect("encode");
    assert_eq!(typed, by_hand);
    // Not found: `found = false` and an empty JSON text.
    let typed = Reply::GetAggregate(GetAggregateResponse::default())
        .encode(5)
        .expect("encode");
    let by_hand = message::encode_response(|mut response| {
        response.set_id(5);
        response
            .init_payload()
            .init_get_aggregate()
            .set_aggregate_json("");
        Ok(())
    })
    .expect("encode");
    assert_eq!(typed, by_hand);
}

#[test]
fn an_unknown_member_keeps_the_id() {
    // A request whose union discriminant (tag 30 = member @31) this schema does not know.
    let mut bytes = Request::Admin(AdminRequest::default())
        .encode(9)
        .expect("encode");
    // Segment table (8 bytes), root pointer (8), then the root's data: the id (8), the tag.
    let tag_at = 8 + 8 + 8;
    assert_eq!(u16::from_le_bytes([bytes[tag_at], bytes[tag_at + 1]]), 26);
    bytes[tag_at] = 30;
    let (id, decoded) = decode_request(&bytes).expect("still a ControlRequest");
    assert_eq!(id, 9);
    let err = decoded.expect_err("unknown member");
    assert!(err.to_string().contains("unknown request"), "{err}");
}

/// `bytes` with the struct-list tag `tag` rewritten to announce `count` empty structs.
fn with_empty_elements(mut bytes: Vec<u8>, tag: [u8; 8], count: u32) -> Vec<u8> {
    let at = bytes
        .windows(8)
        .position(|word| word == tag)
        .expect("the list's tag word");
    bytes[at..at + 4].copy_from_slice(&(count << 2).to_le_bytes());
    bytes[at + 4..at + 8].fill(0);
    bytes
}

#[test]
fn publish_targets_of_empty_structs_are_refused() {
    // Found by the `control_request` fuzz target: the 216 bytes below decoded into a million
    // publish targets (72 MB; the traversal limit allows 8 million, 560 MB).
    let write = WriteRequest {
        token: "t".into(),
        aggregate_type: "p".into(),
        aggregate_id: "1".into(),
        event_type: "e".into(),
        body_json: "{}".into(),
        publish_targets: Some(vec![PublishTarget {
            plugin: "s".into(),
            mode: None,
            priority: None,
        }]),
        ..WriteRequest::default()
    };
    let encoded = Request::AppendEvent(write).encode(3).expect("encode");
    // One element of one data word and three pointers.
    let bytes = with_empty_elements(encoded, [4, 0, 0, 0, 1, 0, 3, 0], 1_000_000);
    assert_eq!(bytes.len(), 216);
    let (id, decoded) = decode_request(&bytes).expect("still a ControlRequest");
    assert_eq!(id, 3);
    // Not `expect_err`: its message would print the million targets.
    let Err(err) = decoded else {
        panic!("a million empty publish targets decoded");
    };
    assert!(
        matches!(&err, ProtoError::Malformed(m)
            if m.contains("1000000 publish targets without their text")),
        "{err}"
    );
}

/// Found by the `control_request` fuzz target once empty structs were refused: an `appendEvent`
/// whose publish targets are a list of 28 16-bit values, which Cap'n Proto reads as structs of
/// two bytes.
const NUMBER_LIST_TARGETS: [u8; 220] = [
    0x00, 0x00, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x29, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x09, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x12, 0x00, 0x00, 0x00,
    0x21, 0x00, 0x00, 0x00, 0x12, 0x00, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x12, 0x00, 0x00, 0x00,
    0x21, 0x00, 0x00, 0x00, 0x12, 0x00, 0x00, 0x04, 0x21, 0x00, 0x00, 0x00, 0xe3, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x3b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x19, 0x00, 0x00, 0x00, 0xda, 0x00, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x74, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x32, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x65, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x7b, 0x7d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x48, 0xe8, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0xef,
    0xaf, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x73, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[test]
fn publish_targets_read_from_a_list_of_numbers_are_refused() {
    let (_, decoded) = decode_request(&NUMBER_LIST_TARGETS).expect("still a ControlRequest");
    let Err(err) = decoded else {
        panic!("publish targets of two bytes each decoded");
    };
    assert!(
        matches!(&err, ProtoError::Malformed(m)
            if m.contains("publish targets without their text")),
        "{err}"
    );
}

#[test]
fn subscribed_events_of_empty_structs_are_refused() {
    // Found by the `control_reply` fuzz target: an 89-byte reply decoded into 6 million empty
    // events, whose re-encoding is over the message limit (a server's reply the client decodes).
    let batch = SubscriptionBatch {
        subscription_id: 1,
        events: vec![SubscribedEvent {
            position: 1,
            event_json: "{}".into(),
        }],
        head: 1,
        last_position: 1,
    };
    let encoded = Reply::SubscriptionBatch(batch).encode(5).expect("encode");
    // One element of one data word and one pointer.
    let bytes = with_empty_elements(encoded, [4, 0, 0, 0, 1, 0, 1, 0], 6_000_000);
    // Not `expect_err`: its message would print the six million events.
    let Err(err) = decode_reply(&bytes) else {
        panic!("six million empty subscribed events decoded");
    };
    assert!(
        matches!(&err, ProtoError::Malformed(m)
            if m.contains("6000000 subscribed events without their text")),
        "{err}"
    );
}
