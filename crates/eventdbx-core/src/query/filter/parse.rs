//! The filter's tokenizer and recursive-descent parser.

use super::{filter_error, CompareOp, Expr, Literal, Predicate};
use crate::error::Result;

/// Parses a whole filter expression; an empty text or tokens left over are errors.
pub(super) fn expression(text: &str) -> Result<Expr> {
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
    Ok(expr)
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

pub(super) const KEYWORDS: [&str; 8] = ["and", "or", "not", "in", "like", "true", "false", "null"];

pub(super) fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '@')
}

pub(super) fn is_ident_continue(c: char) -> bool {
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
