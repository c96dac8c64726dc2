# The stream messages between the server and a `process` plugin's child.
#
# Wire-compatible with the reference (see docs/plugins.md, "Process plugins"). The file id is the
# reference's: it never appears on the wire, but keeping it keeps generated type ids stable.
# The server writes unpacked single-segment stream messages, back to back, on the child's stdin:
# one `init` first, then one `event` per job. Ours: the child answers each event on its stdout
# with an `ack` (or an `error`) carrying the event's sequence, and the server waits for it.
# Rules for changes: never renumber or retype a field; new fields only at new ordinals at the end.

@0xd4b23bfa4df1bcd9;

struct PluginEnvelope {
  message :union {
    init @0 :PluginInit;
    event @1 :PluginEvent;
    ack @2 :PluginAck;
    error @3 :PluginError;
  }
}

struct PluginInit {
  pluginName @0 :Text;
  version @1 :Text;
  target @2 :Text;
}

struct PluginEvent {
  sequence @0 :UInt64;
  aggregateType @1 :Text;
  aggregateId @2 :Text;
  eventType @3 :Text;
  eventVersion @4 :UInt64;
  eventId @5 :Text;
  createdAtEpochMicros @6 :Int64;
  payloadJson @7 :Text;
  metadataJson @8 :Text;
  hash @9 :Text;
  merkleRoot @10 :Text;
  stateVersion @11 :UInt64;
  stateArchived @12 :Bool;
  stateMerkleRoot @13 :Text;
  stateEntries @14 :List(StateEntry);
  schemaJson @15 :Text;
  extensionsJson @16 :Text;
}

struct StateEntry {
  key @0 :Text;
  value @1 :Text;
}

struct PluginAck {
  sequence @0 :UInt64;
}

struct PluginError {
  sequence @0 :UInt64;
  message @1 :Text;
}
