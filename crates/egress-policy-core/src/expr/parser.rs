//! Recursive-descent parser. Precedence, lowest first, as in Mixer (whose grammar is Go's):
//! `||`, `&&`, `==` `!=` `in`, `|` (default), unary `!`, then `.method()`, `[key]`.

use super::SyntaxError;
use super::lexer::{Spanned, Token, tokenize};

/// Nesting deeper than this is refused rather than risking the stack on hostile input.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    Attr {
        name: String,
        column: usize,
    },
    Str(String),
    Int(i64),
    Bool(bool),
    List {
        items: Vec<Ast>,
        column: usize,
    },
    Index {
        target: Box<Ast>,
        key: Box<Ast>,
        column: usize,
    },
    Call {
        target: Box<Ast>,
        method: String,
        args: Vec<Ast>,
        column: usize,
    },
    /// A function call, `name(args)`: Mixer's `match()` and `ip()`.
    Function {
        name: String,
        args: Vec<Ast>,
        column: usize,
    },
    Not {
        operand: Box<Ast>,
        column: usize,
    },
    Binary {
        op: BinaryOp,
        left: Box<Ast>,
        right: Box<Ast>,
        column: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    In,
    Default,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::In => "in",
            BinaryOp::Default => "|",
        }
    }
}

pub fn parse(source: &str) -> Result<Ast, SyntaxError> {
    let tokens = tokenize(source)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let ast = parser.or()?;
    let end = parser.peek();
    if end.token != Token::Eof {
        return Err(SyntaxError::new(
            end.column,
            format!(
                "expected an operator or end of expression, found {}",
                end.token.describe()
            ),
        ));
    }
    Ok(ast)
}

struct Parser {
    tokens: Vec<Spanned>,
    pos: usize,
    depth: usize,
}

const EOF: Spanned = Spanned {
    token: Token::Eof,
    column: 0,
};

impl Parser {
    fn peek(&self) -> &Spanned {
        self.tokens.get(self.pos).unwrap_or(&EOF)
    }

    fn advance(&mut self) -> Spanned {
        let token = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn expect(&mut self, expected: Token) -> Result<Spanned, SyntaxError> {
        let next = self.peek();
        if next.token == expected {
            Ok(self.advance())
        } else {
            Err(SyntaxError::new(
                next.column,
                format!(
                    "expected {}, found {}",
                    expected.describe(),
                    next.token.describe()
                ),
            ))
        }
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SyntaxError::new(
                self.peek().column,
                format!("expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn binary_level(
        &mut self,
        ops: &[(Token, BinaryOp)],
        next: fn(&mut Self) -> Result<Ast, SyntaxError>,
    ) -> Result<Ast, SyntaxError> {
        let mut left = next(self)?;
        while let Some(op) = ops
            .iter()
            .find(|(token, _)| *token == self.peek().token)
            .map(|(_, op)| *op)
        {
            let column = self.advance().column;
            let right = next(self)?;
            left = Ast::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
                column,
            };
        }
        Ok(left)
    }

    fn or(&mut self) -> Result<Ast, SyntaxError> {
        self.binary_level(&[(Token::OrOr, BinaryOp::Or)], Self::and)
    }

    fn and(&mut self) -> Result<Ast, SyntaxError> {
        self.binary_level(&[(Token::AndAnd, BinaryOp::And)], Self::comparison)
    }

    fn comparison(&mut self) -> Result<Ast, SyntaxError> {
        self.binary_level(
            &[
                (Token::EqEq, BinaryOp::Eq),
                (Token::NotEq, BinaryOp::Ne),
                (Token::In, BinaryOp::In),
            ],
            Self::default_op,
        )
    }

    fn default_op(&mut self) -> Result<Ast, SyntaxError> {
        self.binary_level(&[(Token::Pipe, BinaryOp::Default)], Self::unary)
    }

    fn unary(&mut self) -> Result<Ast, SyntaxError> {
        if self.peek().token == Token::Not {
            self.enter()?;
            let column = self.advance().column;
            let operand = self.unary()?;
            self.depth -= 1;
            return Ok(Ast::Not {
                operand: Box::new(operand),
                column,
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Ast, SyntaxError> {
        let mut expr = self.primary()?;
        loop {
            match self.peek().token {
                Token::Dot => {
                    self.advance();
                    let name_token = self.advance();
                    let Token::Ident(name) = name_token.token else {
                        return Err(SyntaxError::new(
                            name_token.column,
                            format!(
                                "expected a name after '.', found {}",
                                name_token.token.describe()
                            ),
                        ));
                    };
                    if self.peek().token == Token::LParen {
                        self.advance();
                        let args = self.arguments(Token::RParen)?;
                        expr = Ast::Call {
                            target: Box::new(expr),
                            method: name,
                            args,
                            column: name_token.column,
                        };
                    } else if let Ast::Attr { name: path, .. } = &mut expr {
                        path.push('.');
                        path.push_str(&name);
                    } else {
                        return Err(SyntaxError::new(
                            name_token.column,
                            format!(
                                "'.{name}' can only follow an attribute name or be a method call"
                            ),
                        ));
                    }
                }
                Token::LBracket => {
                    let column = self.advance().column;
                    self.enter()?;
                    let key = self.or()?;
                    self.depth -= 1;
                    self.expect(Token::RBracket)?;
                    expr = Ast::Index {
                        target: Box::new(expr),
                        key: Box::new(key),
                        column,
                    };
                }
                _ => return Ok(expr),
            }
        }
    }

    fn arguments(&mut self, close: Token) -> Result<Vec<Ast>, SyntaxError> {
        let mut args = Vec::new();
        if self.peek().token == close {
            self.advance();
            return Ok(args);
        }
        self.enter()?;
        loop {
            args.push(self.or()?);
            if self.peek().token == Token::Comma {
                self.advance();
                continue;
            }
            self.expect(close)?;
            self.depth -= 1;
            return Ok(args);
        }
    }

    fn primary(&mut self) -> Result<Ast, SyntaxError> {
        let next = self.advance();
        match next.token {
            Token::Ident(name) if self.peek().token == Token::LParen => {
                self.advance();
                Ok(Ast::Function {
                    name,
                    args: self.arguments(Token::RParen)?,
                    column: next.column,
                })
            }
            Token::Ident(name) => Ok(Ast::Attr {
                name,
                column: next.column,
            }),
            Token::Str(s) => Ok(Ast::Str(s)),
            Token::Int(i) => Ok(Ast::Int(i)),
            Token::True => Ok(Ast::Bool(true)),
            Token::False => Ok(Ast::Bool(false)),
            Token::LParen => {
                self.enter()?;
                let inner = self.or()?;
                self.depth -= 1;
                self.expect(Token::RParen)?;
                Ok(inner)
            }
            Token::LBracket => Ok(Ast::List {
                items: self.arguments(Token::RBracket)?,
                column: next.column,
            }),
            other => Err(SyntaxError::new(
                next.column,
                format!(
                    "expected an attribute, a literal or '(', found {}",
                    other.describe()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_binds_tighter_than_comparison() {
        let ast = parse(r#"a.b | "x" == "y""#).unwrap();
        let Ast::Binary { op, left, .. } = ast else {
            unreachable!()
        };
        assert_eq!(op, BinaryOp::Eq);
        assert!(matches!(
            *left,
            Ast::Binary {
                op: BinaryOp::Default,
                ..
            }
        ));
    }

    #[test]
    fn missing_parenthesis_names_the_column() {
        let err = parse(r#"(request.host == "a""#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected ')', found end of expression at column 21"
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let source = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
        let err = parse(&source).unwrap_err();
        assert!(err.to_string().contains("nests deeper"), "{err}");
        let negations = format!("{}true", "!".repeat(10_000));
        assert!(parse(&negations).is_err());
    }
}
