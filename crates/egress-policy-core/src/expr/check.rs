//! The type checker: resolves attribute names in the attribute table, refuses what the place of
//! use cannot see, checks types, compiles regexes, and records what the expression reads.

use regex::Regex;

use super::parser::{Ast, BinaryOp, parse};
use super::{Expr, Needs, SyntaxError, Use, one_line};
use crate::attributes::{self, Kind, MapAttr, Type};

/// Compiles an expression that must yield a bool (a rule's `match`).
pub fn compile_condition(source: &str, usage: Use) -> Result<(Expr, Needs), SyntaxError> {
    let (expr, ty, needs) = compile_value(source, usage)?;
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
pub fn compile_value(source: &str, usage: Use) -> Result<(Expr, Type, Needs), SyntaxError> {
    let ast = parse(source)?;
    let mut needs = Needs::default();
    let (expr, ty) = Compiler {
        usage,
        needs: &mut needs,
    }
    .compile(&ast)?;
    Ok((expr, ty, needs))
}

struct Compiler<'n> {
    usage: Use,
    needs: &'n mut Needs,
}

impl Compiler<'_> {
    fn compile(&mut self, ast: &Ast) -> Result<(Expr, Type), SyntaxError> {
        match ast {
            Ast::Str(s) => Ok((Expr::Str(s.as_str().into()), Type::String)),
            Ast::Int(i) => Ok((Expr::Int(*i), Type::Int)),
            Ast::Bool(b) => Ok((Expr::Bool(*b), Type::Bool)),
            Ast::Attr { name, column } => self.attribute(name, *column),
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
            Ast::Function { name, args, column } => self.function(name, args, *column),
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

    /// A scalar attribute, if this place of use can see it.
    fn attribute(&mut self, name: &str, column: usize) -> Result<(Expr, Type), SyntaxError> {
        let attribute = self.visible(name, column)?;
        match attribute.kind {
            Kind::Scalar(attr) => {
                self.needs.add(attr);
                Ok((Expr::Attr(attr), attribute.ty))
            }
            Kind::Map(_) => Err(SyntaxError::new(
                column,
                format!("{name} is a map; use {name}[\"key\"]"),
            )),
        }
    }

    /// The table row of `name`, or why this place of use cannot read it.
    fn visible(
        &self,
        name: &str,
        column: usize,
    ) -> Result<&'static attributes::Attribute, SyntaxError> {
        let Some(attribute) = attributes::lookup(name) else {
            return Err(SyntaxError::new(
                column,
                format!("unknown attribute '{name}'{}", attributes::suggestion(name)),
            ));
        };
        if self.usage == Use::Decision && !attribute.phase.before_decision() {
            return Err(SyntaxError::new(
                column,
                format!(
                    "{name} is only available to log fields: {}",
                    attribute.phase.why_not_in_decisions()
                ),
            ));
        }
        Ok(attribute)
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
        let map = match self.visible(name, *name_column)?.kind {
            Kind::Map(map) => map,
            Kind::Scalar(_) => {
                return Err(SyntaxError::new(
                    column,
                    format!("{name} is not a map and cannot be indexed"),
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

    /// Mixer's functions, compiled to what they mean: `match(s, "p*")` is `s.startsWith("p")`,
    /// `match(s, "*p")` is `s.endsWith("p")`, `match(s, "p")` is `s == "p"`; `ip("addr")` is the
    /// address in the canonical text `source.ip` has, checked when the configuration loads.
    fn function(
        &mut self,
        name: &str,
        args: &[Ast],
        column: usize,
    ) -> Result<(Expr, Type), SyntaxError> {
        match (name, args) {
            ("match", [value, pattern]) => {
                let (value, ty) = self.compile(value)?;
                expect_type(ty, Type::String, "first argument of match()", column)?;
                let Ast::Str(pattern) = pattern else {
                    return Err(SyntaxError::new(
                        column,
                        "match() takes a string literal pattern as its second argument",
                    ));
                };
                let value = Box::new(value);
                let expr = if let Some(prefix) = pattern.strip_suffix('*') {
                    Expr::StartsWith(value, Box::new(Expr::Str(prefix.into())))
                } else if let Some(suffix) = pattern.strip_prefix('*') {
                    Expr::EndsWith(value, Box::new(Expr::Str(suffix.into())))
                } else {
                    Expr::Eq(value, Box::new(Expr::Str(pattern.as_str().into())))
                };
                Ok((expr, Type::Bool))
            }
            ("ip", [Ast::Str(address)]) => {
                let canonical = address
                    .parse::<std::net::IpAddr>()
                    .map_err(|_| {
                        SyntaxError::new(column, format!("ip(\"{address}\"): not an IP address"))
                    })?
                    .to_string();
                Ok((Expr::Str(canonical.into()), Type::String))
            }
            ("ip", _) => Err(SyntaxError::new(
                column,
                "ip() takes one string literal, an IP address",
            )),
            ("match", _) => Err(SyntaxError::new(
                column,
                format!("match() takes two arguments, {} given", args.len()),
            )),
            (other, _) => Err(SyntaxError::new(
                column,
                format!(
                    "unknown function '{other}'; functions: match(value, \"pattern\"), ip(\"address\"){}",
                    function_suggestion(other)
                ),
            )),
        }
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

/// What to write instead of a Mixer function the filter does not have.
fn function_suggestion(name: &str) -> &'static str {
    match name {
        "conditional" => "; write the condition into the rule's match, or use '|' for a default",
        "toLower" => "; request.host is lower case already, and the filter compares exactly",
        "email" | "dnsName" | "uri" => "; compare the string itself",
        "timestamp" | "emptyStringMap" => "; the filter has no time or map values in decisions",
        _ => "",
    }
}

fn expect_type(found: Type, wanted: Type, what: &str, column: usize) -> Result<(), SyntaxError> {
    let message = || format!("{what} must be {}, found {}", wanted.name(), found.name());
    (found == wanted)
        .then_some(())
        .ok_or_else(|| SyntaxError::new(column, message()))
}

fn same_type(left: Type, right: Type, what: &str, column: usize) -> Result<(), SyntaxError> {
    if left != right {
        let (left, right) = (left.name(), right.name());
        return Err(SyntaxError::new(
            column,
            format!("{what} must have the same type, found {left} and {right}"),
        ));
    }
    Ok(())
}
