//! Mixer's attribute expression language, as the source documents use it, plus the CEL subset a
//! user of the same expressions expects (`.contains()`, `in [...]`).
//!
//! Expressions are parsed, type-checked and compiled once, when the configuration is loaded;
//! evaluation walks the compiled tree, borrows every string from the request or the config, and
//! cannot fail. An absent attribute equals no literal: `==` is false, `!=` is true, a method call
//! on it is false, and `a | b` yields `b` (README: Expressions).

mod analysis;
mod check;
mod eval;
mod lexer;
mod parser;

use std::collections::BTreeSet;
use std::fmt;

use regex::Regex;

pub use crate::attributes::{Attr, MapAttr, Type};
use crate::request::{Request, Response};
pub use analysis::HostLiterals;
pub use check::{compile_condition, compile_value};

/// A problem in an expression, with the 1-based column where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub column: usize,
    pub message: String,
}

impl SyntaxError {
    pub fn new(column: usize, message: impl Into<String>) -> Self {
        Self {
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.message, self.column)
    }
}

/// What a compiled expression reads, so that the adapter fetches nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub attrs: Vec<Attr>,
    /// Lower-case names of the request headers read through `request.headers[...]`.
    pub headers: BTreeSet<String>,
    /// Label keys read through `source.labels[...]`.
    pub labels: BTreeSet<String>,
}

impl Needs {
    pub fn attr(&self, attr: Attr) -> bool {
        self.attrs.contains(&attr)
    }

    pub fn add(&mut self, attr: Attr) {
        if !self.attrs.contains(&attr) {
            self.attrs.push(attr);
        }
    }

    pub fn merge(&mut self, other: &Needs) {
        for attr in &other.attrs {
            self.add(*attr);
        }
        self.headers.extend(other.headers.iter().cloned());
        self.labels.extend(other.labels.iter().cloned());
    }
}

/// Where an expression is used: decisions see only what exists before they are made
/// ([`crate::attributes::Phase::before_decision`]); log fields see everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Decision,
    Log,
}

/// A compiled expression.
#[derive(Debug)]
pub enum Expr {
    Attr(Attr),
    Header(Box<str>),
    Label(Box<str>),
    Str(Box<str>),
    Int(i64),
    Bool(bool),
    Default(Box<Expr>, Box<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    StartsWith(Box<Expr>, Box<Expr>),
    EndsWith(Box<Expr>, Box<Expr>),
    Contains(Box<Expr>, Box<Expr>),
    Matches(Box<Expr>, Regex),
    InStrings(Box<Expr>, Vec<Box<str>>),
    InInts(Box<Expr>, Vec<i64>),
}

/// A value produced by evaluation; strings are borrowed from the request or the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

/// What an expression is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub request: &'a Request,
    pub response: Option<&'a Response>,
    /// The decision's outcome, for log fields: (`policy.decision`, `policy.deniedBy`).
    pub outcome: Option<(&'a str, Option<&'a str>)>,
}

impl<'a> Env<'a> {
    /// For decisions: only the request.
    pub fn request(request: &'a Request) -> Self {
        Env {
            request,
            response: None,
            outcome: None,
        }
    }
}

/// Regex error messages span several lines; configuration errors are one line each.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
