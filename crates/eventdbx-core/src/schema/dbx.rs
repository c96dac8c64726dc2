//! The `schema.dbx` authoring format (`docs/server.md`, "Authoring format"), compiled into a
//! [`SchemaMap`].
//!
//! ```
//! use eventdbx_core::schema::dbx::compile;
//!
//! let map = compile(
//!     "aggregate person {\n  field email { type = \"text\" }\n  event person_created {}\n}",
//!     None,
//!     "2025-11-27T10:00:00Z",
//! )
//! .expect("compiles");
//! assert!(map.get("person").is_some());
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{
    AggregateSchema, ColumnRules, ColumnSpec, EventSchema, Format, ReferenceRules, SchemaMap,
};
use crate::error::{CoreError, Result};
use crate::names::MAX_NOTE_CHARS;

/// Type names that compile to a `text` column with `format: "reference"`.
const REFERENCE_ALIASES: [&str; 4] = ["ref", "reference", "aggregate_ref", "aggregate-reference"];

/// Compiles a `schema.dbx` document into a schema map.
///
/// `existing` is the map currently installed: a compiled schema keeps its `created_at`, and
/// keeps its `updated_at` when nothing else changed. `now` (RFC 3339) stamps new and changed
/// schemas. Every error is [`CoreError::InvalidSchema`]; syntax errors end with
/// ` at line L, column C`. The result is validated like any schema set.
pub fn compile(source: &str, existing: Option<&SchemaMap>, now: &str) -> Result<SchemaMap> {
    let mut parser = Parser {
        src: source,
        pos: 0,
    };
    let mut map = SchemaMap::default();
    loop {
        parser.skip_trivia();
        if parser.at_end() {
            break;
        }
        let start = parser.pos;
        let word = parser.token()?;
        if word != "aggregate" {
            return Err(parser.syntax_at(start, format!("expected `aggregate`, found `{word}`")));
        }
        let mut schema = parser.aggregate()?;
        if map.get(&schema.aggregate).is_some() {
            return Err(CoreError::invalid(format!(
                "aggregate {} is defined more than once",
                schema.aggregate
            )));
        }
        let previous = existing.and_then(|m| m.get(&schema.aggregate));
        stamp(&mut schema, previous, now);
        map.insert(schema);
    }
    map.normalize();
    map.validate()?;
    Ok(map)
}

fn stamp(schema: &mut AggregateSchema, previous: Option<&AggregateSchema>, now: &str) {
    match previous {
        Some(previous) => {
            schema.created_at = previous.created_at.clone();
            schema.updated_at = previous.updated_at.clone();
            let mut normalized = schema.clone();
            normalized.normalize();
            if &normalized != previous {
                schema.updated_at = now.to_owned();
            }
        }
        None => {
            schema.created_at = now.to_owned();
            schema.updated_at = now.to_owned();
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '{' | '}' | '=')
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn syntax_at(&self, at: usize, detail: String) -> CoreError {
        let before = &self.src[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        CoreError::invalid(format!("{detail} at line {line}, column {column}"))
    }

    fn syntax(&self, detail: String) -> CoreError {
        self.syntax_at(self.pos, detail)
    }

    fn skip_trivia(&mut self) {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with('#') || trimmed.starts_with("//") {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else {
                return;
            }
        }
    }

    fn expect(&mut self, wanted: char) -> Result<()> {
        self.skip_trivia();
        match self.peek() {
            Some(c) if c == wanted => {
                self.pos += c.len_utf8();
                Ok(())
            }
            Some(c) => Err(self.syntax(format!("expected `{wanted}`, found `{c}`"))),
            None => Err(self.syntax(format!("expected `{wanted}`, found end of file"))),
        }
    }

    /// A bare word, or one delimiter character.
    fn token(&mut self) -> Result<String> {
        self.skip_trivia();
        let rest = self.rest();
        let Some(first) = rest.chars().next() else {
            return Err(self.syntax("expected token".into()));
        };
        let len = if is_delimiter(first) {
            first.len_utf8()
        } else {
            rest.find(is_delimiter).unwrap_or(rest.len())
        };
        self.pos += len;
        Ok(rest[..len].to_owned())
    }

    /// A property key: a bare word (delimiters are not keys).
    fn key(&mut self) -> Result<String> {
        self.skip_trivia();
        match self.peek() {
            Some(c) if !is_delimiter(c) => self.token(),
            _ => Err(self.syntax("expected token".into())),
        }
    }

    fn name(&mut self) -> Result<String> {
        self.skip_trivia();
        match self.peek() {
            Some('"') => match self.json()? {
                Value::String(name) => Ok(name),
                _ => Err(self.syntax("expected name".into())),
            },
            Some(c) if !is_delimiter(c) => self.token(),
            _ => Err(self.syntax("expected name".into())),
        }
    }

    fn json(&mut self) -> Result<Value> {
        self.skip_trivia();
        let start = self.pos;
        if matches!(self.peek(), None | Some('}' | '{' | '=')) && !self.rest().starts_with('{') {
            return Err(self.syntax("expected JSON value".into()));
        }
        let mut stream = serde_json::Deserializer::from_str(self.rest()).into_iter::<Value>();
        match stream.next() {
            Some(Ok(value)) => {
                self.pos += stream.byte_offset();
                Ok(value)
            }
            Some(Err(e)) => Err(self.syntax_at(start, format!("invalid JSON value: {e}"))),
            None => Err(self.syntax("expected JSON value".into())),
        }
    }

    /// `= <JSON value>` after a property key.
    fn property(&mut self) -> Result<Value> {
        self.expect('=')?;
        self.json()
    }

    /// Whether the block continues; consumes its closing brace when it does not.
    fn block_continues(&mut self) -> Result<bool> {
        self.skip_trivia();
        match self.peek() {
            Some('}') => {
                self.pos += 1;
                Ok(false)
            }
            Some(_) => Ok(true),
            None => Err(self.syntax("expected `}`, found end of file".into())),
        }
    }

    fn aggregate(&mut self) -> Result<AggregateSchema> {
        let name = self.name()?;
        if name.is_empty() {
            return Err(CoreError::invalid("aggregate name cannot be empty"));
        }
        self.expect('{')?;
        let mut seen = Vec::new();
        let mut schema = AggregateSchema {
            aggregate: name.clone(),
            snapshot_threshold: None,
            locked: false,
            field_locks: Vec::new(),
            hidden: false,
            hidden_fields: Vec::new(),
            column_types: BTreeMap::new(),
            events: BTreeMap::new(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        while self.block_continues()? {
            let start = self.pos;
            let key = self.key()?;
            match key.as_str() {
                "field" => self.field(&mut schema)?,
                "event" => self.event(&mut schema)?,
                "snapshot_threshold" | "locked" | "hidden" | "hidden_fields" | "field_locks" => {
                    let label = format!("aggregate.{key}");
                    once(self, &mut seen, &key, &label, start)?;
                    let value = self.property()?;
                    match key.as_str() {
                        "snapshot_threshold" => {
                            schema.snapshot_threshold = match value {
                                Value::Null => None,
                                other => Some(other.as_u64().ok_or_else(|| {
                                    CoreError::invalid(format!(
                                        "{label} must be a non-negative integer or null"
                                    ))
                                })?),
                            }
                        }
                        "locked" => schema.locked = boolean(&value, &label)?,
                        "hidden" => schema.hidden = boolean(&value, &label)?,
                        "hidden_fields" => schema.hidden_fields.extend(strings(value, &label)?),
                        _ => schema.field_locks.extend(strings(value, &label)?),
                    }
                }
                _ => {
                    return Err(
                        self.syntax_at(start, format!("unsupported aggregate property `{key}`"))
                    )
                }
            }
        }
        if schema.events.is_empty() {
            return Err(CoreError::invalid(format!(
                "aggregate {name} must define at least one event"
            )));
        }
        Ok(schema)
    }

    fn field(&mut self, schema: &mut AggregateSchema) -> Result<()> {
        let name = self.name()?;
        let a = &schema.aggregate;
        if schema.column_types.contains_key(&name) {
            return Err(CoreError::invalid(format!(
                "field {name} is defined more than once in aggregate {a}"
            )));
        }
        self.expect('{')?;
        let (mut seen, mut column_type, mut rules) = (Vec::new(), None, ColumnRules::default());
        while self.block_continues()? {
            let start = self.pos;
            let key = self.key()?;
            if !matches!(key.as_str(), "type" | "rules" | "hidden" | "locked") {
                return Err(self.syntax_at(start, format!("unsupported field property `{key}`")));
            }
            let label = format!("field.{key}");
            once(self, &mut seen, &key, &label, start)?;
            let value = self.property()?;
            match key.as_str() {
                "type" => match value {
                    Value::String(t) if t.trim().is_empty() => {
                        return Err(CoreError::invalid("field.type cannot be empty"))
                    }
                    Value::String(t) => column_type = Some(t),
                    _ => return Err(CoreError::invalid(format!("{label} must be a JSON string"))),
                },
                "rules" => {
                    if !value.is_object() {
                        return Err(CoreError::invalid("field.rules must be a JSON object"));
                    }
                    rules = ColumnRules::deserialize(value).map_err(|e| {
                        CoreError::invalid(format!("failed to parse field.rules: {e}"))
                    })?;
                }
                "hidden" if boolean(&value, &label)? => schema.hidden_fields.push(name.clone()),
                "locked" if boolean(&value, &label)? => schema.field_locks.push(name.clone()),
                _ => {}
            }
        }
        let mut column_type = column_type.ok_or_else(|| {
            CoreError::invalid(format!("field {name} in aggregate {a} must define type"))
        })?;
        if REFERENCE_ALIASES.contains(&column_type.trim().to_ascii_lowercase().as_str()) {
            column_type = "text".to_owned();
            rules.format = Some(Format::Reference);
            rules.reference.get_or_insert_with(ReferenceRules::default);
        }
        schema
            .column_types
            .insert(name, ColumnSpec { column_type, rules });
        Ok(())
    }

    fn event(&mut self, schema: &mut AggregateSchema) -> Result<()> {
        let name = self.name()?;
        if schema.events.contains_key(&name) {
            return Err(CoreError::invalid(format!(
                "event {name} is defined more than once in aggregate {}",
                schema.aggregate
            )));
        }
        self.expect('{')?;
        let (mut seen, mut event) = (Vec::new(), EventSchema::default());
        while self.block_continues()? {
            let start = self.pos;
            let key = self.key()?;
            if !matches!(key.as_str(), "fields" | "note") {
                return Err(self.syntax_at(start, format!("unsupported event property `{key}`")));
            }
            let label = format!("event.{key}");
            once(self, &mut seen, &key, &label, start)?;
            let value = self.property()?;
            if key == "fields" {
                event.fields = strings(value, &label)?;
                continue;
            }
            event.notes = match value {
                Value::Null => None,
                Value::String(note) if note.chars().count() > MAX_NOTE_CHARS => {
                    return Err(CoreError::invalid(format!(
                        "default note for event {name} cannot exceed 128 characters"
                    )))
                }
                Value::String(note) => Some(note),
                _ => {
                    return Err(CoreError::invalid(format!(
                        "{label} must be a JSON string or null"
                    )))
                }
            };
        }
        schema.events.insert(name, event);
        Ok(())
    }
}

fn once(
    parser: &Parser<'_>,
    seen: &mut Vec<String>,
    key: &str,
    label: &str,
    at: usize,
) -> Result<()> {
    if seen.iter().any(|k| k == key) {
        return Err(parser.syntax_at(at, format!("{label} cannot be defined more than once")));
    }
    seen.push(key.to_owned());
    Ok(())
}

fn boolean(value: &Value, label: &str) -> Result<bool> {
    value
        .as_bool()
        .ok_or_else(|| CoreError::invalid(format!("{label} must be a JSON boolean")))
}

fn strings(value: Value, label: &str) -> Result<Vec<String>> {
    let not_strings = || CoreError::invalid(format!("{label} must be a JSON array of strings"));
    let Value::Array(items) = value else {
        return Err(not_strings());
    };
    let strings = items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => Ok(s),
            _ => Err(not_strings()),
        })
        .collect::<Result<Vec<_>>>()?;
    if strings.iter().any(String::is_empty) {
        return Err(CoreError::invalid(format!(
            "{label} entries cannot be empty"
        )));
    }
    Ok(strings)
}
