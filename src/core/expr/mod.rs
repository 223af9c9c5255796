//! Mixer's attribute expression language, as the source documents use it, plus the CEL subset a
//! user of the same expressions expects (`.contains()`, `in [...]`).
//!
//! Expressions are parsed, type-checked and compiled once, when the configuration is loaded;
//! evaluation walks the compiled tree, borrows every string from the request or the config, and
//! cannot fail. An absent attribute equals no literal: `==` is false, `!=` is true, a method call
//! on it is false, and `a | b` yields `b` (README: Expressions).

mod lexer;
mod parser;

use std::collections::BTreeSet;
use std::fmt;

use regex::Regex;

use crate::core::request::{Request, Response};
use parser::{Ast, BinaryOp, parse};

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

/// Static type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Int,
    Bool,
    /// `request.headers`, `source.labels`: only usable through `[key]`.
    Map,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Int => "int",
            Type::Bool => "bool",
            Type::Map => "map",
        }
    }
}

/// A scalar attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    RequestHost,
    RequestPath,
    RequestUrlPath,
    RequestMethod,
    RequestScheme,
    RequestUseragent,
    SourceNamespace,
    SourceServiceAccount,
    SourcePrincipal,
    SourceUser,
    SourceWorkload,
    SourceIp,
    ConnectionMtls,
    ConnectionRequestedServerName,
    ResponseCode,
    ResponseSize,
    ResponseDuration,
    PolicyDecision,
    PolicyDeniedBy,
}

/// A map attribute, indexed by a literal key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAttr {
    RequestHeaders,
    SourceLabels,
}

enum AttrKind {
    Scalar(Attr, Type),
    Map(MapAttr),
}

/// Every attribute name the language knows, with its meaning (the README's reference is built
/// from the same names).
pub const ATTRIBUTES: &[(&str, &str)] = &[
    (
        "request.host",
        "string: host, lower case, port and trailing dot removed",
    ),
    ("request.path", "string: path with query string"),
    ("request.url_path", "string: path without query string"),
    ("request.method", "string: HTTP method"),
    ("request.scheme", "string: http or https"),
    ("request.useragent", "string: User-Agent header"),
    ("request.headers", "map: request headers by lower-case name"),
    (
        "source.namespace",
        "string: caller's namespace (mTLS identity)",
    ),
    (
        "source.serviceAccount",
        "string: caller's service account (mTLS identity)",
    ),
    ("source.principal", "string: caller's SPIFFE ID"),
    ("source.user", "string: authenticated user"),
    (
        "source.labels",
        "map: caller's workload labels (Istio peer metadata)",
    ),
    (
        "source.workload",
        "string: caller's workload name (Istio peer metadata)",
    ),
    ("source.ip", "string: caller's IP address"),
    (
        "connection.mtls",
        "bool: the caller presented a verified client certificate",
    ),
    (
        "connection.requested_server_name",
        "string: SNI of the downstream connection",
    ),
    ("response.code", "int: response status (log fields only)"),
    (
        "response.size",
        "int: response body bytes (log fields only)",
    ),
    (
        "response.duration",
        "int: milliseconds until the response ended (log fields only)",
    ),
    (
        "policy.decision",
        "string: allow, deny or reject (log fields only)",
    ),
    (
        "policy.deniedBy",
        "string: what denied or rejected the request, as in the reply's details (log fields only)",
    ),
];

fn resolve(name: &str) -> Option<AttrKind> {
    use AttrKind::{Map, Scalar};
    Some(match name {
        "request.host" => Scalar(Attr::RequestHost, Type::String),
        "request.path" => Scalar(Attr::RequestPath, Type::String),
        "request.url_path" => Scalar(Attr::RequestUrlPath, Type::String),
        "request.method" => Scalar(Attr::RequestMethod, Type::String),
        "request.scheme" => Scalar(Attr::RequestScheme, Type::String),
        "request.useragent" => Scalar(Attr::RequestUseragent, Type::String),
        "request.headers" => Map(MapAttr::RequestHeaders),
        "source.namespace" => Scalar(Attr::SourceNamespace, Type::String),
        "source.serviceAccount" => Scalar(Attr::SourceServiceAccount, Type::String),
        "source.principal" => Scalar(Attr::SourcePrincipal, Type::String),
        "source.user" => Scalar(Attr::SourceUser, Type::String),
        "source.labels" => Map(MapAttr::SourceLabels),
        "source.workload" => Scalar(Attr::SourceWorkload, Type::String),
        "source.ip" => Scalar(Attr::SourceIp, Type::String),
        "connection.mtls" => Scalar(Attr::ConnectionMtls, Type::Bool),
        "connection.requested_server_name" => {
            Scalar(Attr::ConnectionRequestedServerName, Type::String)
        }
        "response.code" => Scalar(Attr::ResponseCode, Type::Int),
        "response.size" => Scalar(Attr::ResponseSize, Type::Int),
        "response.duration" => Scalar(Attr::ResponseDuration, Type::Int),
        "policy.decision" => Scalar(Attr::PolicyDecision, Type::String),
        "policy.deniedBy" => Scalar(Attr::PolicyDeniedBy, Type::String),
        _ => return None,
    })
}

/// Hints for names a user porting a Mixer configuration is likely to write.
fn suggestion(name: &str) -> &'static str {
    match name {
        "source.service" | "source.name" => "; use source.serviceAccount or source.workload",
        "source.uid" => "; use source.principal",
        "request.url" | "request.uri" => "; use request.path or request.url_path",
        "destination.service" | "destination.host" => "; use request.host",
        _ => "",
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

    pub(crate) fn add(&mut self, attr: Attr) {
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

/// Where an expression is used: decisions are made before a response exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
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

/// Compiles an expression that must yield a bool (a rule's `match`).
pub fn compile_condition(source: &str, phase: Phase) -> Result<(Expr, Needs), SyntaxError> {
    let (expr, ty, needs) = compile_value(source, phase)?;
    if ty != Type::Bool {
        return Err(SyntaxError::new(
            1,
            format!(
                "expression yields {}, but a condition must yield bool",
                ty.name()
            ),
        ));
    }
    Ok((expr, needs))
}

/// Compiles an expression that yields a string, int or bool (a log field, a list value).
pub fn compile_value(source: &str, phase: Phase) -> Result<(Expr, Type, Needs), SyntaxError> {
    let ast = parse(source)?;
    let mut needs = Needs::default();
    let (expr, ty) = Compiler {
        phase,
        needs: &mut needs,
    }
    .compile(&ast)?;
    Ok((expr, ty, needs))
}

struct Compiler<'n> {
    phase: Phase,
    needs: &'n mut Needs,
}

impl Compiler<'_> {
    fn compile(&mut self, ast: &Ast) -> Result<(Expr, Type), SyntaxError> {
        match ast {
            Ast::Str(s) => Ok((Expr::Str(s.as_str().into()), Type::String)),
            Ast::Int(i) => Ok((Expr::Int(*i), Type::Int)),
            Ast::Bool(b) => Ok((Expr::Bool(*b), Type::Bool)),
            Ast::Attr { name, column } => match resolve(name) {
                Some(AttrKind::Scalar(attr, ty)) => {
                    if self.phase == Phase::Decision && name.starts_with("response.") {
                        return Err(SyntaxError::new(
                            *column,
                            format!(
                                "{name} is only available to log fields: decisions are made before the response exists"
                            ),
                        ));
                    }
                    if self.phase == Phase::Decision && name.starts_with("policy.") {
                        return Err(SyntaxError::new(
                            *column,
                            format!(
                                "{name} is only available to log fields: it is the decision's outcome"
                            ),
                        ));
                    }
                    self.needs.add(attr);
                    Ok((Expr::Attr(attr), ty))
                }
                Some(AttrKind::Map(_)) => Err(SyntaxError::new(
                    *column,
                    format!("{name} is a map; use {name}[\"key\"]"),
                )),
                None => Err(SyntaxError::new(
                    *column,
                    format!("unknown attribute '{name}'{}", suggestion(name)),
                )),
            },
            Ast::List { column, .. } => Err(SyntaxError::new(
                *column,
                "a list literal can only appear on the right of 'in'",
            )),
            Ast::Index {
                target,
                key,
                column,
            } => self.index(target, key, *column),
            Ast::Call {
                target,
                method,
                args,
                column,
            } => self.call(target, method, args, *column),
            Ast::Not { operand, column } => {
                let (inner, ty) = self.compile(operand)?;
                expect_type(ty, Type::Bool, "operand of '!'", *column)?;
                Ok((Expr::Not(Box::new(inner)), Type::Bool))
            }
            Ast::Binary {
                op,
                left,
                right,
                column,
            } => self.binary(*op, left, right, *column),
        }
    }

    fn index(
        &mut self,
        target: &Ast,
        key: &Ast,
        column: usize,
    ) -> Result<(Expr, Type), SyntaxError> {
        let Ast::Attr {
            name,
            column: name_column,
        } = target
        else {
            return Err(SyntaxError::new(
                column,
                "only request.headers and source.labels can be indexed",
            ));
        };
        let map = match resolve(name) {
            Some(AttrKind::Map(map)) => map,
            Some(AttrKind::Scalar(..)) => {
                return Err(SyntaxError::new(
                    column,
                    format!("{name} is not a map and cannot be indexed"),
                ));
            }
            None => {
                return Err(SyntaxError::new(
                    *name_column,
                    format!("unknown attribute '{name}'"),
                ));
            }
        };
        let Ast::Str(key) = key else {
            return Err(SyntaxError::new(
                column + 1,
                "the key in [...] must be a string literal",
            ));
        };
        Ok(match map {
            MapAttr::RequestHeaders => {
                let lower = key.to_ascii_lowercase();
                self.needs.headers.insert(lower.clone());
                (Expr::Header(lower.into()), Type::String)
            }
            MapAttr::SourceLabels => {
                self.needs.labels.insert(key.clone());
                (Expr::Label(key.as_str().into()), Type::String)
            }
        })
    }

    fn call(
        &mut self,
        target: &Ast,
        method: &str,
        args: &[Ast],
        column: usize,
    ) -> Result<(Expr, Type), SyntaxError> {
        let (receiver, ty) = self.compile(target)?;
        expect_type(
            ty,
            Type::String,
            &format!("receiver of .{method}()"),
            column,
        )?;
        let [arg] = args else {
            return Err(SyntaxError::new(
                column,
                format!(
                    ".{method}() takes exactly one argument, {} given",
                    args.len()
                ),
            ));
        };
        let receiver = Box::new(receiver);
        if method == "matches" {
            let Ast::Str(pattern) = arg else {
                return Err(SyntaxError::new(
                    column,
                    ".matches() takes a string literal (compiled once at load)",
                ));
            };
            let regex = Regex::new(pattern).map_err(|e| {
                SyntaxError::new(
                    column,
                    format!("invalid regex in .matches(): {}", one_line(&e.to_string())),
                )
            })?;
            return Ok((Expr::Matches(receiver, regex), Type::Bool));
        }
        let (arg_expr, arg_ty) = self.compile(arg)?;
        expect_type(
            arg_ty,
            Type::String,
            &format!("argument of .{method}()"),
            column,
        )?;
        let arg_expr = Box::new(arg_expr);
        let expr = match method {
            "startsWith" => Expr::StartsWith(receiver, arg_expr),
            "endsWith" => Expr::EndsWith(receiver, arg_expr),
            "contains" => Expr::Contains(receiver, arg_expr),
            other => {
                return Err(SyntaxError::new(
                    column,
                    format!(
                        "unknown method '{other}'; expected startsWith, endsWith, contains or matches"
                    ),
                ));
            }
        };
        Ok((expr, Type::Bool))
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        left: &Ast,
        right: &Ast,
        column: usize,
    ) -> Result<(Expr, Type), SyntaxError> {
        if op == BinaryOp::In {
            return self.membership(left, right, column);
        }
        let (l, lt) = self.compile(left)?;
        let (r, rt) = self.compile(right)?;
        let (l, r) = (Box::new(l), Box::new(r));
        let operands = format!("operands of '{}'", op.symbol());
        match op {
            BinaryOp::And | BinaryOp::Or => {
                expect_type(lt, Type::Bool, &operands, column)?;
                expect_type(rt, Type::Bool, &operands, column)?;
                let expr = if op == BinaryOp::And {
                    Expr::And(l, r)
                } else {
                    Expr::Or(l, r)
                };
                Ok((expr, Type::Bool))
            }
            BinaryOp::Eq | BinaryOp::Ne => {
                same_type(lt, rt, &operands, column)?;
                let expr = if op == BinaryOp::Eq {
                    Expr::Eq(l, r)
                } else {
                    Expr::Ne(l, r)
                };
                Ok((expr, Type::Bool))
            }
            BinaryOp::Default => {
                same_type(lt, rt, &operands, column)?;
                Ok((Expr::Default(l, r), lt))
            }
            BinaryOp::In => Err(SyntaxError::new(column, "internal: 'in' handled above")),
        }
    }

    fn membership(
        &mut self,
        left: &Ast,
        right: &Ast,
        column: usize,
    ) -> Result<(Expr, Type), SyntaxError> {
        let (value, ty) = self.compile(left)?;
        let Ast::List { items, .. } = right else {
            return Err(SyntaxError::new(
                column,
                "the right of 'in' must be a list literal like [\"a\", \"b\"]",
            ));
        };
        let value = Box::new(value);
        let literal_error = || {
            SyntaxError::new(
                column,
                format!("every item of the list must be a {} literal", ty.name()),
            )
        };
        match ty {
            Type::String => {
                let strings = items
                    .iter()
                    .map(|item| match item {
                        Ast::Str(s) => Ok(s.as_str().into()),
                        _ => Err(literal_error()),
                    })
                    .collect::<Result<_, _>>()?;
                Ok((Expr::InStrings(value, strings), Type::Bool))
            }
            Type::Int => {
                let ints = items
                    .iter()
                    .map(|item| match item {
                        Ast::Int(i) => Ok(*i),
                        _ => Err(literal_error()),
                    })
                    .collect::<Result<_, _>>()?;
                Ok((Expr::InInts(value, ints), Type::Bool))
            }
            other => Err(SyntaxError::new(
                column,
                format!(
                    "'in' needs a string or int on its left, found {}",
                    other.name()
                ),
            )),
        }
    }
}

fn expect_type(found: Type, wanted: Type, what: &str, column: usize) -> Result<(), SyntaxError> {
    if found == wanted {
        Ok(())
    } else {
        Err(SyntaxError::new(
            column,
            format!("{what} must be {}, found {}", wanted.name(), found.name()),
        ))
    }
}

fn same_type(left: Type, right: Type, what: &str, column: usize) -> Result<(), SyntaxError> {
    if left == right {
        Ok(())
    } else {
        Err(SyntaxError::new(
            column,
            format!(
                "{what} must have the same type, found {} and {}",
                left.name(),
                right.name()
            ),
        ))
    }
}

/// Regex error messages span several lines; configuration errors are one line each.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Host names and host suffixes an expression names, for bounded destination metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLiterals {
    /// From `request.host == "x"` and `request.host in [...]`.
    pub names: Vec<String>,
    /// From `request.host.endsWith("x")`, without a leading dot.
    pub suffixes: Vec<String>,
}

impl Expr {
    /// Collects the host literals of this expression into `out`.
    pub fn host_literals(&self, out: &mut HostLiterals) {
        let is_host = |e: &Expr| matches!(e, Expr::Attr(Attr::RequestHost));
        match self {
            Expr::Eq(l, r) | Expr::Ne(l, r) => {
                for (a, b) in [(l, r), (r, l)] {
                    if let (true, Expr::Str(name)) = (is_host(a), &**b) {
                        out.names.push(name.to_ascii_lowercase());
                    }
                }
            }
            Expr::InStrings(value, items) if is_host(value) => {
                out.names
                    .extend(items.iter().map(|i| i.to_ascii_lowercase()));
            }
            Expr::EndsWith(value, suffix) if is_host(value) => {
                if let Expr::Str(suffix) = &**suffix {
                    out.suffixes
                        .push(suffix.trim_start_matches('.').to_ascii_lowercase());
                }
            }
            _ => {}
        }
        match self {
            Expr::Default(a, b)
            | Expr::Eq(a, b)
            | Expr::Ne(a, b)
            | Expr::And(a, b)
            | Expr::Or(a, b)
            | Expr::StartsWith(a, b)
            | Expr::EndsWith(a, b)
            | Expr::Contains(a, b) => {
                a.host_literals(out);
                b.host_literals(out);
            }
            Expr::Not(a) | Expr::Matches(a, _) | Expr::InStrings(a, _) | Expr::InInts(a, _) => {
                a.host_literals(out)
            }
            _ => {}
        }
    }

    /// Evaluates the expression; `None` means "absent".
    pub fn eval<'a>(&'a self, env: &Env<'a>) -> Option<Value<'a>> {
        match self {
            Expr::Attr(attr) => attribute(*attr, env),
            Expr::Header(name) => env.request.header(name).map(Value::Str),
            Expr::Label(key) => env.request.source.label(key).map(Value::Str),
            Expr::Str(s) => Some(Value::Str(s)),
            Expr::Int(i) => Some(Value::Int(*i)),
            Expr::Bool(b) => Some(Value::Bool(*b)),
            Expr::Default(value, fallback) => value.eval(env).or_else(|| fallback.eval(env)),
            _ => Some(Value::Bool(self.holds(env))),
        }
    }

    /// Evaluates a condition; an absent value is false.
    pub fn holds(&self, env: &Env<'_>) -> bool {
        match self {
            Expr::Eq(l, r) => matches!((l.eval(env), r.eval(env)), (Some(a), Some(b)) if a == b),
            Expr::Ne(l, r) => !matches!((l.eval(env), r.eval(env)), (Some(a), Some(b)) if a == b),
            Expr::And(l, r) => l.holds(env) && r.holds(env),
            Expr::Or(l, r) => l.holds(env) || r.holds(env),
            Expr::Not(inner) => !inner.holds(env),
            Expr::StartsWith(s, p) => strings(s, p, env, |s, p| s.starts_with(p)),
            Expr::EndsWith(s, p) => strings(s, p, env, |s, p| s.ends_with(p)),
            Expr::Contains(s, p) => strings(s, p, env, |s, p| s.contains(p)),
            Expr::Matches(s, regex) => {
                matches!(s.eval(env), Some(Value::Str(s)) if regex.is_match(s))
            }
            Expr::InStrings(v, items) => {
                matches!(v.eval(env), Some(Value::Str(s)) if items.iter().any(|item| **item == *s))
            }
            Expr::InInts(v, items) => {
                matches!(v.eval(env), Some(Value::Int(i)) if items.contains(&i))
            }
            _ => matches!(self.eval(env), Some(Value::Bool(true))),
        }
    }
}

fn strings(s: &Expr, p: &Expr, env: &Env<'_>, test: fn(&str, &str) -> bool) -> bool {
    match (s.eval(env), p.eval(env)) {
        (Some(Value::Str(s)), Some(Value::Str(p))) => test(s, p),
        _ => false,
    }
}

fn attribute<'a>(attr: Attr, env: &Env<'a>) -> Option<Value<'a>> {
    let request = env.request;
    let source = &request.source;
    let text = |value: &'a Option<String>| value.as_deref().map(Value::Str);
    match attr {
        Attr::RequestHost => text(&request.host),
        Attr::RequestPath => request.path().map(Value::Str),
        Attr::RequestUrlPath => request.url_path().map(Value::Str),
        Attr::RequestMethod => text(&request.method),
        Attr::RequestScheme => text(&request.scheme),
        Attr::RequestUseragent => text(&request.useragent),
        Attr::SourceNamespace => text(&source.namespace),
        Attr::SourceServiceAccount => text(&source.service_account),
        Attr::SourcePrincipal => text(&source.principal),
        Attr::SourceUser => text(&source.user),
        Attr::SourceWorkload => text(&source.workload),
        Attr::SourceIp => text(&source.ip),
        Attr::ConnectionMtls => request.mtls.map(Value::Bool),
        Attr::ConnectionRequestedServerName => text(&request.requested_server_name),
        Attr::ResponseCode => env.response.and_then(|r| r.code).map(Value::Int),
        Attr::ResponseSize => env.response.and_then(|r| r.size).map(Value::Int),
        Attr::ResponseDuration => env.response.and_then(|r| r.duration_ms).map(Value::Int),
        Attr::PolicyDecision => env.outcome.map(|(decision, _)| Value::Str(decision)),
        Attr::PolicyDeniedBy => env.outcome.and_then(|(_, by)| by).map(Value::Str),
    }
}

#[cfg(test)]
mod tests;
