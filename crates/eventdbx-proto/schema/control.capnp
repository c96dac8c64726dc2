# The EventDBX control protocol: hello, session envelopes and the messages they carry.
#
# Wire-compatible with the reference (see docs/protocol.md, "Protocol v1").
# The file id is the reference's: it never appears on the wire, but keeping it keeps generated type
# ids stable. Data-section slots follow from the ordinals, so the fields of every struct are listed
# in ordinal order and the encoded layout is checked by the crate's tests.
# Rules for changes: never renumber or retype a field; new optional fields only at new ordinals at
# the end of a struct, new requests only at new union ordinals (older peers ignore both).

@0xc3d1ec2a1e3f5b26;

using Schema = import "schema.capnp";

# ---------------------------------------------------------------------------------------------
# Phase A/B: the hello and its response, sent as raw stream messages without a length prefix.

struct ControlHello {
  protocolVersion @0 :UInt16;
  # 1 for protocol v1, 2 for our protocol v2.
  token @1 :Text;
  # v1 bearer token; an explicitly set "" in a v2 hello (never a null pointer).
  tenantId @2 :Text;
  noNoise @3 :Bool;
  # Asks for a plaintext session.
}

struct ControlHelloResponse {
  accepted @0 :Bool;
  message @1 :Text;
  noNoise @2 :Bool;
  # The negotiated value: true means the session is plaintext.
  capabilities @3 :List(Text);
  # Ours only: extensions the server honours (reads as an empty list from the reference).
}

struct ControlHelloResponseV1 {
  # ControlHelloResponse without our `capabilities` pointer: one pointer instead of two. Encoding
  # through this struct when there are no capabilities makes our response byte-identical to the
  # reference's; readers use ControlHelloResponse, which reads both layouts.
  accepted @0 :Bool;
  message @1 :Text;
  noNoise @2 :Bool;
}

# The reference's CLI proxy messages. Our server never runs commands: it only recognises a
# CliRequest as the first message and answers one rejecting CliResponse.

struct CliRequest {
  args @0 :List(Text);
}

struct CliResponse {
  exitCode @0 :Int32;
  stdout @1 :Text;
  stderr @2 :Text;
}

# ---------------------------------------------------------------------------------------------
# Phase D: session envelopes. Tag = ordinal - 1 in both unions; the two orders differ at 6 and 7.

struct ControlRequest {
  id @0 :UInt64;
  payload :union {
    listAggregates @1 :ListAggregatesRequest;
    getAggregate @2 :GetAggregateRequest;
    listEvents @3 :ListEventsRequest;
    appendEvent @4 :AppendEventRequest;
    verifyAggregate @5 :VerifyAggregateRequest;
    patchEvent @6 :PatchEventRequest;
    selectAggregate @7 :SelectAggregateRequest;
    createAggregate @8 :CreateAggregateRequest;
    setAggregateArchive @9 :SetAggregateArchiveRequest;
    listSchemas @10 :Schema.ListSchemasRequest;
    replaceSchemas @11 :Schema.ReplaceSchemasRequest;
    tenantAssign @12 :Schema.TenantAssignRequest;
    tenantUnassign @13 :Schema.TenantUnassignRequest;
    tenantQuotaSet @14 :Schema.TenantQuotaSetRequest;
    tenantQuotaClear @15 :Schema.TenantQuotaClearRequest;
    tenantQuotaRecalc @16 :Schema.TenantQuotaRecalcRequest;
    tenantReload @17 :Schema.TenantReloadRequest;
    tenantSchemaPublish @18 :Schema.TenantSchemaPublishRequest;
    createSnapshot @19 :CreateSnapshotRequest;
    listSnapshots @20 :ListSnapshotsRequest;
    getSnapshot @21 :GetSnapshotRequest;
    listReferrers @22 :ListReferrersRequest;
    readOutbox @23 :ReadOutboxRequest;
    # Ours (see schema.capnp): tenant listing and schema-version history/activation.
    tenantList @24 :Schema.TenantListRequest;
    tenantSchemaHistory @25 :Schema.TenantSchemaHistoryRequest;
    tenantSchemaActivate @26 :Schema.TenantSchemaActivateRequest;
    admin @27 :AdminRequest;
    # Ours, v2 sessions only (see docs/subscriptions.md).
    subscribe @28 :SubscribeRequest;
    unsubscribe @29 :UnsubscribeRequest;
    subscriptionAck @30 :SubscriptionAckRequest;
  }
}

struct ControlResponse {
  id @0 :UInt64;
  payload :union {
    listAggregates @1 :ListAggregatesResponse;
    getAggregate @2 :GetAggregateResponse;
    listEvents @3 :ListEventsResponse;
    appendEvent @4 :AppendEventResponse;
    # Also the reply to patchEvent: there is no patchEvent response member.
    verifyAggregate @5 :VerifyAggregateResponse;
    selectAggregate @6 :SelectAggregateResponse;
    error @7 :ControlError;
    createAggregate @8 :CreateAggregateResponse;
    setAggregateArchive @9 :SetAggregateArchiveResponse;
    listSchemas @10 :Schema.ListSchemasResponse;
    replaceSchemas @11 :Schema.ReplaceSchemasResponse;
    tenantAssign @12 :Schema.TenantAssignResponse;
    tenantUnassign @13 :Schema.TenantUnassignResponse;
    tenantQuotaSet @14 :Schema.TenantQuotaSetResponse;
    tenantQuotaClear @15 :Schema.TenantQuotaClearResponse;
    tenantQuotaRecalc @16 :Schema.TenantQuotaRecalcResponse;
    tenantReload @17 :Schema.TenantReloadResponse;
    tenantSchemaPublish @18 :Schema.TenantSchemaPublishResponse;
    createSnapshot @19 :CreateSnapshotResponse;
    listSnapshots @20 :ListSnapshotsResponse;
    getSnapshot @21 :GetSnapshotResponse;
    listReferrers @22 :ListReferrersResponse;
    readOutbox @23 :ReadOutboxResponse;
    tenantList @24 :Schema.TenantListResponse;
    tenantSchemaHistory @25 :Schema.TenantSchemaHistoryResponse;
    tenantSchemaActivate @26 :Schema.TenantSchemaActivateResponse;
    admin @27 :AdminResponse;
    subscribe @28 :SubscribeResponse;
    unsubscribe @29 :UnsubscribeResponse;
    subscriptionAck @30 :SubscriptionAckResponse;
    subscriptionBatch @31 :SubscriptionBatch;
    # Pushed by the server with the subscribe request's id: events, or a heartbeat when empty.
  }
}

struct ControlError {
  code @0 :Text;
  message @1 :Text;
}

# ---------------------------------------------------------------------------------------------
# Aggregate reads.

struct ListAggregatesRequest {
  cursor @0 :Text;
  hasCursor @1 :Bool;
  take @2 :UInt64;
  hasTake @3 :Bool;
  filter @4 :Text;
  hasFilter @5 :Bool;
  sort @6 :Text;
  hasSort @7 :Bool;
  includeArchived @8 :Bool;
  archivedOnly @9 :Bool;
  token @10 :Text;
  resolve @11 :Bool;
  resolveDepth @12 :UInt32;
  hasResolveDepth @13 :Bool;
}

struct ListAggregatesResponse {
  aggregatesJson @0 :Text;
  nextCursor @1 :Text;
  hasNextCursor @2 :Bool;
  resolvedJson @3 :Text;
  hasResolvedJson @4 :Bool;
}

struct GetAggregateRequest {
  aggregateType @0 :Text;
  aggregateId @1 :Text;
  token @2 :Text;
  resolve @3 :Bool;
  resolveDepth @4 :UInt32;
  hasResolveDepth @5 :Bool;
}

struct GetAggregateResponse {
  found @0 :Bool;
  aggregateJson @1 :Text;
  resolvedJson @2 :Text;
  hasResolvedJson @3 :Bool;
}

struct ListEventsRequest {
  aggregateType @0 :Text;
  aggregateId @1 :Text;
  cursor @2 :Text;
  hasCursor @3 :Bool;
  take @4 :UInt64;
  hasTake @5 :Bool;
  filter @6 :Text;
  hasFilter @7 :Bool;
  token @8 :Text;
}

struct ListEventsResponse {
  eventsJson @0 :Text;
  nextCursor @1 :Text;
  hasNextCursor @2 :Bool;
  # Ours (docs/subscriptions.md): the position of each event of eventsJson, in the same order,
  # 0 for an event without one. Read only when the flag is set; EventDBX's own server sends
  # neither, and its events then have no position.
  positions @3 :List(UInt64);
  hasPositions @4 :Bool;
}

struct SelectAggregateRequest {
  aggregateType @0 :Text;
  aggregateId @1 :Text;
  fields @2 :List(Text);
  token @3 :Text;
}

struct SelectAggregateResponse {
  found @0 :Bool;
  selectionJson @1 :Text;
}

struct VerifyAggregateRequest {
  # There is no token field in the reference protocol.
  aggregateType @0 :Text;
  aggregateId @1 :Text;
}

struct VerifyAggregateResponse {
  merkleRoot @0 :Text;
}

struct ListReferrersRequest {
  token @0 :Text;
  aggregateType @1 :Text;
  aggregateId @2 :Text;
}

struct ListReferrersResponse {
  referrersJson @0 :Text;
}

struct ReadOutboxRequest {
  token @0 :Text;
  afterEventId @1 :UInt64;
  hasAfterEventId @2 :Bool;
  take @3 :UInt64;
  hasTake @4 :Bool;
}

struct ReadOutboxResponse {
  eventsJson @0 :Text;
  nextAfterEventId @1 :UInt64;
  hasNextAfterEventId @2 :Bool;
  # Ours, as in ListEventsResponse: each event's position, 0 for none, when the flag is set.
  positions @3 :List(UInt64);
  hasPositions @4 :Bool;
}

# ---------------------------------------------------------------------------------------------
# Writes. Append, patch and create share one layout; @11..@13 are our extension (section 12.1).

struct AppendEventRequest {
  token @0 :Text;
  aggregateType @1 :Text;
  aggregateId @2 :Text;
  eventType @3 :Text;
  payloadJson @4 :Text;
  note @5 :Text;
  hasNote @6 :Bool;
  metadataJson @7 :Text;
  hasMetadata @8 :Bool;
  publishTargets @9 :List(PublishTarget);
  hasPublishTargets @10 :Bool;
  expectedVersion @11 :UInt64;
  hasExpectedVersion @12 :Bool;
  idempotencyKey @13 :Text;
}

struct PatchEventRequest {
  token @0 :Text;
  aggregateType @1 :Text;
  aggregateId @2 :Text;
  eventType @3 :Text;
  patchJson @4 :Text;
  note @5 :Text;
  hasNote @6 :Bool;
  metadataJson @7 :Text;
  hasMetadata @8 :Bool;
  publishTargets @9 :List(PublishTarget);
  hasPublishTargets @10 :Bool;
  expectedVersion @11 :UInt64;
  hasExpectedVersion @12 :Bool;
  idempotencyKey @13 :Text;
}

struct CreateAggregateRequest {
  token @0 :Text;
  aggregateType @1 :Text;
  aggregateId @2 :Text;
  eventType @3 :Text;
  payloadJson @4 :Text;
  note @5 :Text;
  hasNote @6 :Bool;
  metadataJson @7 :Text;
  hasMetadata @8 :Bool;
  publishTargets @9 :List(PublishTarget);
  hasPublishTargets @10 :Bool;
  expectedVersion @11 :UInt64;
  # Ignored by createAggregate; kept so the three write requests share one layout.
  hasExpectedVersion @12 :Bool;
  idempotencyKey @13 :Text;
}

struct PublishTarget {
  plugin @0 :Text;
  mode @1 :Text;
  hasMode @2 :Bool;
  priority @3 :Text;
  hasPriority @4 :Bool;
}

struct AppendEventResponse {
  eventJson @0 :Text;
}

struct CreateAggregateResponse {
  aggregateJson @0 :Text;
}

struct SetAggregateArchiveRequest {
  token @0 :Text;
  aggregateType @1 :Text;
  aggregateId @2 :Text;
  archived @3 :Bool;
  note @4 :Text;
  hasNote @5 :Bool;
  # Ours: publish targets of the archive or restore (old servers ignore them). Read only when the
  # flag is set; false or an empty list = broadcast, as for writes. The jobs carry the aggregate
  # after the change and `"action": "archive"|"restore"` (no event is recorded).
  publishTargets @6 :List(PublishTarget);
  hasPublishTargets @7 :Bool;
}

# Ours: plugin and queue administration (`dbx plugin …`, `dbx queue …`). Root/admin tokens only.
# `action` names the operation (e.g. `plugin.list`, `queue.retry`); `argsJson` is a JSON object of
# its arguments (blank = `{}`). The reply is the operation's JSON result.
struct AdminRequest {
  token @0 :Text;
  action @1 :Text;
  argsJson @2 :Text;
}

struct AdminResponse {
  resultJson @0 :Text;
}

struct SetAggregateArchiveResponse {
  aggregateJson @0 :Text;
}

# ---------------------------------------------------------------------------------------------
# Snapshots.

struct CreateSnapshotRequest {
  token @0 :Text;
  aggregateType @1 :Text;
  aggregateId @2 :Text;
  comment @3 :Text;
  hasComment @4 :Bool;
}

struct CreateSnapshotResponse {
  snapshotJson @0 :Text;
}

struct ListSnapshotsRequest {
  token @0 :Text;
  aggregateType @1 :Text;
  aggregateId @2 :Text;
  hasAggregateType @3 :Bool;
  hasAggregateId @4 :Bool;
  version @5 :UInt64;
  hasVersion @6 :Bool;
}

struct ListSnapshotsResponse {
  snapshotsJson @0 :Text;
}

struct GetSnapshotRequest {
  token @0 :Text;
  snapshotId @1 :UInt64;
}

struct GetSnapshotResponse {
  found @0 :Bool;
  snapshotJson @1 :Text;
}

# ---------------------------------------------------------------------------------------------
# Subscriptions (ours, v2 sessions only; docs/subscriptions.md).

struct SubscribeRequest {
  token @0 :Text;
  fromEnd @1 :Bool;
  # Start at the head: only events committed after the subscription began.
  afterPosition @2 :UInt64;
  # Without fromEnd: deliver the events after this position (0 = from the start).
  aggregateType @3 :Text;
  hasAggregateType @4 :Bool;
  aggregateId @5 :Text;
  hasAggregateId @6 :Bool;
  eventTypes @7 :List(Text);
  # Empty: every event type.
  batchSize @8 :UInt32;
  # Most events per batch; 0 = the server's default.
  creditWindow @9 :UInt32;
  # Batches the server may send before it waits for a subscriptionAck; 0 = the server's default.
}

struct SubscribeResponse {
  subscriptionId @0 :UInt64;
  startPosition @1 :UInt64;
  # Delivery starts after this position (the head, for fromEnd).
}

struct UnsubscribeRequest {
  subscriptionId @0 :UInt64;
}

struct UnsubscribeResponse {
  found @0 :Bool;
}

struct SubscriptionAckRequest {
  subscriptionId @0 :UInt64;
  batches @1 :UInt32;
  # Batches the client has consumed: the server may send that many more.
}

struct SubscriptionAckResponse {
  found @0 :Bool;
}

struct SubscribedEvent {
  position @0 :UInt64;
  eventJson @1 :Text;
}

struct SubscriptionBatch {
  subscriptionId @0 :UInt64;
  events @1 :List(SubscribedEvent);
  # Ascending positions; empty for a heartbeat.
  head @2 :UInt64;
  # The tenant's head position when the batch was read.
  lastPosition @3 :UInt64;
  # The subscription's position after this batch: resume after it (it advances past events the
  # filters skip, so it can be above the last event's position).
}
