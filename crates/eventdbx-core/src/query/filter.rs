//! The filter language (§8.6 plus ours: `>=`, `<=`, backtick-quoted field names and
//! `LIKE … ESCAPE 'c'`).
//!
//! [`Filter::parse`] tokenizes and parses by recursive descent into an [`Expr`]; `Display`
//! prints the canonical form, which parses back to an equal tree. Evaluation keeps JSON types:
//!
//! - `=` holds when both sides have the same JSON type and value (numbers within
//!   `f64::EPSILON`); `"1"` never equals `1`, and objects and arrays equal nothing. `!=` is its
//!   negation; `IN` is `=` against any listed value.
//! - `>`, `<`, `>=`, `<=` compare a number with a number only; any other pairing is false.
//! - `LIKE` matches a string against a string pattern only: anchored, case-sensitive, `%` or
//!   `*` any run, `_` or `?` one character.
//! - A missing field makes every comparison false, except `!= null`, which is true.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde_json::{Map, Value};

use super::{AggregateView, EventView};
use crate::error::{CoreError, Result};

fn filter_error(detail: impl fmt::Display) -> CoreError {
    CoreError::invalid(format!("invalid filter expression: {detail}"))
}

/// A literal on the right of a comparison. A bare identifier value is a string.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A quoted string or a bare identifier.
    String(String),
    /// A number (parsed as f64; the grammar has no exponent, NaN or infinity).
    Number(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`.
    Eq,
    /// `!=` or `<>`.
    Ne,
    /// `>`.
    Gt,
    /// `<`.
    Lt,
    /// `>=` (ours).
    Ge,
    /// `<=` (ours).
    Le,
}

impl CompareOp {
    fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Gt => ">",
            CompareOp::Lt => "<",
            CompareOp::Ge => ">=",
            CompareOp::Le => "<=",
        }
    }
}

/// What a comparison tests its field with.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `field op value`.
    Compare(CompareOp, Literal),
    /// `field LIKE pattern [ESCAPE 'c']`. A non-string pattern matches nothing.
    Like {
        /// The pattern.
        pattern: Literal,
        /// The escape character (ours).
        escape: Option<char>,
    },
    /// `field IN [v, …]`.
    In(Vec<Literal>),
}

/// A filter expression tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a OR b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a AND b`.
    And(Box<Expr>, Box<Expr>),
    /// `NOT a` (also what `field NOT op value` parses to).
    Not(Box<Expr>),
    /// One comparison on a field path (dotted, as written).
    Compare {
        /// The field path, e.g. `address.city` or `@policy-rule`.
        field: String,
        /// The test.
        predicate: Predicate,
    },
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The expression tree.
    pub expr: Expr,
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Op(CompareOp),
    And,
    Or,
    Not,
    In,
    Like,
    True,
    False,
    Null,
    Ident(String),
    QuotedField(String),
    Str(String),
    Number(f64),
}

const KEYWORDS: [&str; 8] = ["and", "or", "not", "in", "like", "true", "false", "null"];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '@')
}

fn is_ident_continue(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | '@')
}

/// Reads a quoted run after its opening quote; a backslash takes the next character literally.
fn read_quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    quote: char,
    unterminated: &str,
) -> Result<String> {
    let mut text = String::new();
    loop {
        match chars.next() {
            None => return Err(filter_error(unterminated)),
            Some('\\') => match chars.next() {
                None => return Err(filter_error("unterminated escape sequence")),
                Some(c) => text.push(c),
            },
            Some(c) if c == quote => return Ok(text),
            Some(c) => text.push(c),
        }
    }
}

fn tokenize(input: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        chars.next();
        let token = match c {
            '(' => Token::LParen,
            ')' => Token::RParen,
            '[' => Token::LBracket,
            ']' => Token::RBracket,
            ',' => Token::Comma,
            '=' => Token::Op(CompareOp::Eq),
            '!' => {
                if chars.next_if_eq(&'=').is_none() {
                    return Err(filter_error("expected '=' after '!'"));
                }
                Token::Op(CompareOp::Ne)
            }
            '<' => match chars.next_if(|n| *n == '>' || *n == '=') {
                Some('>') => Token::Op(CompareOp::Ne),
                Some(_) => Token::Op(CompareOp::Le),
                None => Token::Op(CompareOp::Lt),
            },
            '>' => match chars.next_if_eq(&'=') {
                Some(_) => Token::Op(CompareOp::Ge),
                None => Token::Op(CompareOp::Gt),
            },
            '\'' | '"' => Token::Str(read_quoted(&mut chars, c, "unterminated string literal")?),
            '`' => {
                let name = read_quoted(&mut chars, '`', "unterminated quoted field name")?;
                if name.is_empty() {
                    return Err(filter_error("quoted field name cannot be empty"));
                }
                Token::QuotedField(name)
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut text = String::from(c);
                while let Some(n) = chars.next_if(|n| n.is_ascii_digit() || *n == '.') {
                    text.push(n);
                }
                let number = text
                    .parse::<f64>()
                    .map_err(|_| filter_error(format_args!("invalid number: {text}")))?;
                Token::Number(number)
            }
            c if is_ident_start(c) => {
                let mut text = String::from(c);
                while let Some(n) = chars.next_if(|n| is_ident_continue(*n)) {
                    text.push(n);
                }
                match text.to_ascii_lowercase().as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    "in" => Token::In,
                    "like" => Token::Like,
                    "true" => Token::True,
                    "false" => Token::False,
                    "null" => Token::Null,
                    _ => Token::Ident(text),
                }
            }
            c => return Err(filter_error(format_args!("unexpected character '{c}'"))),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn eat(&mut self, token: &Token) -> bool {
        if self.peek() == Some(token) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or_expr(&mut self) -> Result<Expr> {
        let mut left = self.and_expr()?;
        while self.eat(&Token::Or) {
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr> {
        let mut left = self.not_expr()?;
        while self.eat(&Token::And) {
            let right = self.not_expr()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not_expr(&mut self) -> Result<Expr> {
        if self.eat(&Token::Not) {
            return Ok(Expr::Not(Box::new(self.not_expr()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr> {
        if self.eat(&Token::LParen) {
            let inner = self.or_expr()?;
            if !self.eat(&Token::RParen) {
                return Err(filter_error("expected ')'"));
            }
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr> {
        let field = match self.next() {
            Some(Token::Ident(name) | Token::QuotedField(name)) => name,
            // `a = 1 AND` ends where a field name must start (04-acceptance scenario 68).
            _ => return Err(filter_error("expected field name in comparison")),
        };
        let negated = self.eat(&Token::Not);
        let predicate = match self.next() {
            Some(Token::Op(op)) => Predicate::Compare(op, self.value()?),
            Some(Token::Like) => {
                let pattern = self.value()?;
                // `ESCAPE` is a keyword only here, so `escape` stays usable as a field name.
                let escape = match self.peek() {
                    Some(Token::Ident(word)) if word.eq_ignore_ascii_case("escape") => {
                        self.pos += 1;
                        Some(self.escape_char()?)
                    }
                    _ => None,
                };
                Predicate::Like { pattern, escape }
            }
            Some(Token::In) => Predicate::In(self.list()?),
            _ => return Err(filter_error("expected comparison operator")),
        };
        let comparison = Expr::Compare { field, predicate };
        Ok(if negated {
            Expr::Not(Box::new(comparison))
        } else {
            comparison
        })
    }

    fn escape_char(&mut self) -> Result<char> {
        if let Some(Token::Str(s)) = self.next() {
            let mut chars = s.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                return Ok(c);
            }
        }
        Err(filter_error("ESCAPE expects a single-character string"))
    }

    fn list(&mut self) -> Result<Vec<Literal>> {
        if !self.eat(&Token::LBracket) {
            return Err(filter_error("expected '['"));
        }
        let mut values = Vec::new();
        if self.eat(&Token::RBracket) {
            return Ok(values);
        }
        loop {
            values.push(self.value()?);
            if self.eat(&Token::Comma) {
                if self.eat(&Token::RBracket) {
                    return Ok(values);
                }
                continue;
            }
            if self.eat(&Token::RBracket) {
                return Ok(values);
            }
            return Err(filter_error("expected ']'"));
        }
    }

    fn value(&mut self) -> Result<Literal> {
        match self.next() {
            Some(Token::Str(s) | Token::Ident(s)) => Ok(Literal::String(s)),
            Some(Token::Number(n)) => Ok(Literal::Number(n)),
            Some(Token::True) => Ok(Literal::Bool(true)),
            Some(Token::False) => Ok(Literal::Bool(false)),
            Some(Token::Null) => Ok(Literal::Null),
            None => Err(filter_error("unexpected end of filter")),
            Some(_) => Err(filter_error("invalid value literal")),
        }
    }
}

impl Filter {
    /// Parses a filter expression. Errors are `invalid_schema` with
    /// `invalid filter expression: <detail>`.
    pub fn parse(text: &str) -> Result<Filter> {
        if text.trim().is_empty() {
            return Err(filter_error("filter cannot be empty"));
        }
        let mut parser = Parser {
            tokens: tokenize(text)?,
            pos: 0,
        };
        let expr = parser.or_expr()?;
        if parser.pos < parser.tokens.len() {
            return Err(filter_error("unexpected tokens after expression"));
        }
        Ok(Filter { expr })
    }

    /// Whether the filter compares a field named `archived` (any case), or a type-qualified
    /// `<type>.archived` of a known type: such filters widen a listing's scope to active +
    /// archived (§8.2).
    pub fn mentions_archived(&self, types: &dyn AggregateTypes) -> bool {
        fn walk(expr: &Expr, types: &dyn AggregateTypes) -> bool {
            match expr {
                Expr::Or(a, b) | Expr::And(a, b) => walk(a, types) || walk(b, types),
                Expr::Not(a) => walk(a, types),
                Expr::Compare { field, .. } => {
                    field.eq_ignore_ascii_case("archived")
                        || field.split_once('.').is_some_and(|(head, rest)| {
                            types.contains(head) && rest.eq_ignore_ascii_case("archived")
                        })
                }
            }
        }
        walk(&self.expr, types)
    }

    /// Evaluates the filter on an aggregate. `types` tells which first path segments are
    /// aggregate type names (the type-qualified paths of ours, §8.6).
    pub fn matches_aggregate(
        &self,
        aggregate: &AggregateView<'_>,
        types: &dyn AggregateTypes,
    ) -> bool {
        eval(&self.expr, &|field| {
            resolve_aggregate(aggregate, field, types)
        })
    }

    /// Evaluates the filter on an event (`listEvents`, §8.6 "Field resolution on events").
    pub fn matches_event(&self, event: &EventView<'_>) -> bool {
        eval(&self.expr, &|field| resolve_event(event, field))
    }
}

// ---------------------------------------------------------------------------------------------
// Printer

fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str, quote: char) -> fmt::Result {
    use fmt::Write;
    f.write_char(quote)?;
    for c in text.chars() {
        if c == quote || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char(quote)
}

fn is_bare_field(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_ident_start)
        && chars.all(is_ident_continue)
        && !KEYWORDS.iter().any(|k| name.eq_ignore_ascii_case(k))
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => write_escaped(f, s, '\''),
            // `Display` for f64 never uses an exponent and prints the shortest text that reads
            // back to the same value, which is exactly what the NUMBER grammar can hold.
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            Literal::Null => f.write_str("null"),
        }
    }
}

fn precedence(expr: &Expr) -> u8 {
    match expr {
        Expr::Or(..) => 0,
        Expr::And(..) => 1,
        Expr::Not(_) | Expr::Compare { .. } => 2,
    }
}

/// Prints `expr`, parenthesised when its precedence is below `min`.
fn write_expr(f: &mut fmt::Formatter<'_>, expr: &Expr, min: u8) -> fmt::Result {
    if precedence(expr) < min {
        f.write_str("(")?;
        write_expr(f, expr, 0)?;
        return f.write_str(")");
    }
    match expr {
        // Operators associate to the left, so a right operand of the same precedence needs
        // parentheses to keep its shape.
        Expr::Or(a, b) => {
            write_expr(f, a, 0)?;
            f.write_str(" OR ")?;
            write_expr(f, b, 1)
        }
        Expr::And(a, b) => {
            write_expr(f, a, 1)?;
            f.write_str(" AND ")?;
            write_expr(f, b, 2)
        }
        Expr::Not(a) => {
            f.write_str("NOT ")?;
            write_expr(f, a, 2)
        }
        Expr::Compare { field, predicate } => {
            if is_bare_field(field) {
                f.write_str(field)?;
            } else {
                write_escaped(f, field, '`')?;
            }
            match predicate {
                Predicate::Compare(op, value) => write!(f, " {} {value}", op.as_str()),
                Predicate::Like { pattern, escape } => {
                    write!(f, " LIKE {pattern}")?;
                    if let Some(c) = escape {
                        f.write_str(" ESCAPE ")?;
                        write_escaped(f, &c.to_string(), '\'')?;
                    }
                    Ok(())
                }
                Predicate::In(values) => {
                    f.write_str(" IN [")?;
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{v}")?;
                    }
                    f.write_str("]")
                }
            }
        }
    }
}

impl fmt::Display for Expr {
    /// The canonical form: keywords upper-case, strings single-quoted, fields bare unless they
    /// need backticks, and only the parentheses the tree needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self, 0)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// The aggregate type names a tenant knows (a type with a schema or with at least one
/// aggregate); a path whose first segment is one of them is type-qualified.
pub trait AggregateTypes {
    /// Whether `name` is a known aggregate type.
    fn contains(&self, name: &str) -> bool;
}

impl AggregateTypes for HashSet<String> {
    fn contains(&self, name: &str) -> bool {
        HashSet::contains(self, name)
    }
}

impl AggregateTypes for BTreeSet<String> {
    fn contains(&self, name: &str) -> bool {
        BTreeSet::contains(self, name)
    }
}

impl AggregateTypes for [&str] {
    fn contains(&self, name: &str) -> bool {
        <[&str]>::contains(self, &name)
    }
}

/// No known types: every path keeps the reference meaning.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAggregateTypes;

impl AggregateTypes for NoAggregateTypes {
    fn contains(&self, _name: &str) -> bool {
        false
    }
}

/// A resolved field: `None` when missing.
type Resolved<'a> = Option<Cow<'a, Value>>;

fn eval<'a>(expr: &Expr, resolve: &dyn Fn(&str) -> Resolved<'a>) -> bool {
    match expr {
        Expr::Or(a, b) => eval(a, resolve) || eval(b, resolve),
        Expr::And(a, b) => eval(a, resolve) && eval(b, resolve),
        Expr::Not(a) => !eval(a, resolve),
        Expr::Compare { field, predicate } => test(resolve(field).as_deref(), predicate),
    }
}

fn test(value: Option<&Value>, predicate: &Predicate) -> bool {
    let Some(value) = value else {
        return matches!(predicate, Predicate::Compare(CompareOp::Ne, Literal::Null));
    };
    match predicate {
        Predicate::Compare(op, literal) => match op {
            CompareOp::Eq => equals(value, literal),
            CompareOp::Ne => !equals(value, literal),
            _ => match (value.as_f64(), literal) {
                (Some(a), Literal::Number(b)) => match op {
                    CompareOp::Gt => a > *b,
                    CompareOp::Lt => a < *b,
                    CompareOp::Ge => a >= *b,
                    _ => a <= *b,
                },
                _ => false,
            },
        },
        Predicate::Like { pattern, escape } => match (value, pattern) {
            (Value::String(s), Literal::String(p)) => like(s, p, *escape),
            _ => false,
        },
        Predicate::In(list) => list.iter().any(|l| equals(value, l)),
    }
}

/// `=`: same JSON type and value; objects and arrays equal nothing.
fn equals(value: &Value, literal: &Literal) -> bool {
    match (value, literal) {
        (Value::String(a), Literal::String(b)) => a == b,
        (Value::Number(a), Literal::Number(b)) => {
            a.as_f64().is_some_and(|a| (a - b).abs() <= f64::EPSILON)
        }
        (Value::Bool(a), Literal::Bool(b)) => a == b,
        (Value::Null, Literal::Null) => true,
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LikeToken {
    Any,
    One,
    Char(char),
}

fn compile_like(pattern: &str, escape: Option<char>) -> Vec<LikeToken> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            // Only the wildcards and the escape itself can be escaped; any other escape
            // character stands for itself.
            if let Some(n) =
                chars.next_if(|n| matches!(n, '%' | '_' | '*' | '?') || Some(*n) == escape)
            {
                out.push(LikeToken::Char(n));
                continue;
            }
        }
        out.push(match c {
            '%' | '*' => LikeToken::Any,
            '_' | '?' => LikeToken::One,
            c => LikeToken::Char(c),
        });
    }
    out
}

/// Anchored wildcard match with the classic greedy-with-backtrack algorithm: linear memory,
/// and at most one backtrack point (the last `Any`) is needed.
fn like(text: &str, pattern: &str, escape: Option<char>) -> bool {
    let pattern = compile_like(pattern, escape);
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut p) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(LikeToken::Any) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(LikeToken::One) => {
                t += 1;
                p += 1;
            }
            Some(LikeToken::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    p = bp + 1;
                    t = bt + 1;
                    backtrack = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..]
        .iter()
        .all(|tok| *tok == LikeToken::Any)
}

/// Walks `segments` through objects (by key) and arrays (by numeric index).
fn walk<'a>(mut value: &'a Value, segments: &[&str]) -> Option<&'a Value> {
    for segment in segments {
        value = match value {
            Value::Object(map) => map.get(*segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn walk_map<'a>(map: &'a Map<String, Value>, segments: &[&str]) -> Option<&'a Value> {
    let (first, rest) = segments.split_first()?;
    walk(map.get(*first)?, rest)
}

fn resolve_aggregate<'a>(
    aggregate: &AggregateView<'a>,
    field: &str,
    types: &dyn AggregateTypes,
) -> Resolved<'a> {
    if let Some((head, rest)) = field.split_once('.') {
        if types.contains(head) {
            // Ours: a type-qualified path. Other types see a missing field.
            return if head == aggregate.aggregate_type {
                resolve_unqualified(aggregate, rest)
            } else {
                None
            };
        }
    }
    resolve_unqualified(aggregate, field)
}

fn owned<'a>(value: impl Into<Value>) -> Resolved<'a> {
    Some(Cow::Owned(value.into()))
}

fn resolve_unqualified<'a>(aggregate: &AggregateView<'a>, field: &str) -> Resolved<'a> {
    match field {
        "aggregate_type" | "aggregateType" => return owned(aggregate.aggregate_type),
        "aggregate_id" | "aggregateId" => return owned(aggregate.aggregate_id),
        "merkle_root" | "merkleRoot" => return owned(aggregate.merkle_root),
        "created_at" | "createdAt" => return owned(aggregate.created_at),
        "updated_at" | "updatedAt" => return owned(aggregate.updated_at),
        "archived" => return owned(aggregate.archived),
        "version" => return owned(aggregate.version),
        _ => {}
    }
    let segments: Vec<&str> = field.split('.').collect();
    if let Some(("extensions", rest)) = segments.split_first().map(|(h, r)| (*h, r)) {
        if !rest.is_empty() {
            return walk_map(aggregate.extensions, rest).map(Cow::Borrowed);
        }
    }
    let first = segments.first().copied().unwrap_or_default();
    let map = if aggregate.state.contains_key(first) {
        aggregate.state
    } else {
        aggregate.extensions
    };
    walk_map(map, &segments).map(Cow::Borrowed)
}

/// The event's `metadata` object as filters see it (§8.6), resolved one path at a time so no
/// JSON is built for fields nobody asked about.
fn resolve_metadata<'a>(event: &EventView<'a>, segments: &[&str]) -> Resolved<'a> {
    match segments {
        ["note"] => event.note.map(|n| Cow::Owned(Value::from(n))),
        ["event_id" | "eventId"] => owned(event.event_id.to_string()),
        ["created_at" | "createdAt"] => owned(event.created_at),
        ["issued_by" | "issuedBy"] => owned(match event.issued_by {
            Some((group, user)) => serde_json::json!({ "group": group, "user": user }),
            None => Value::Null,
        }),
        ["issued_by" | "issuedBy", "group"] => event.issued_by.map(|(g, _)| Cow::Owned(g.into())),
        ["issued_by" | "issuedBy", "user"] => event.issued_by.map(|(_, u)| Cow::Owned(u.into())),
        _ => None,
    }
}

fn resolve_event<'a>(event: &EventView<'a>, field: &str) -> Resolved<'a> {
    match field {
        "aggregate_type" | "aggregateType" => return owned(event.aggregate_type),
        "aggregate_id" | "aggregateId" => return owned(event.aggregate_id),
        "event_type" | "eventType" => return owned(event.event_type),
        "version" => return owned(event.version),
        "merkle_root" | "merkleRoot" => return owned(event.merkle_root),
        "hash" => return owned(event.hash),
        _ => {}
    }
    let segments: Vec<&str> = field.split('.').collect();
    match segments.split_first() {
        Some((&"metadata", rest)) => return resolve_metadata(event, rest),
        Some((&"extensions", rest)) => {
            return event
                .extensions
                .and_then(|e| walk(e, rest))
                .map(Cow::Borrowed)
        }
        Some((&"payload", rest)) => return walk(event.payload, rest).map(Cow::Borrowed),
        _ => {}
    }
    // A bare name (`event_id`, `created_at`, `note`, `issued_by.user`, …): metadata, then
    // extensions, then payload.
    resolve_metadata(event, &segments)
        .or_else(|| {
            event
                .extensions
                .and_then(|e| walk(e, &segments))
                .map(Cow::Borrowed)
        })
        .or_else(|| walk(event.payload, &segments).map(Cow::Borrowed))
}
