//! The canonical printed form of a filter, which parses back to an equal tree.

use std::fmt;

use super::parse::{is_ident_continue, is_ident_start, KEYWORDS};
use super::{Expr, Filter, Literal, Predicate};

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
