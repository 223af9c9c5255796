//! Tokens of the expression language, each with the 1-based column where it starts.

use super::SyntaxError;

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    True,
    False,
    In,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Not,
    AndAnd,
    OrOr,
    Pipe,
    EqEq,
    NotEq,
    Eof,
}

impl Token {
    /// How the token is named in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Token::Ident(name) => format!("'{name}'"),
            Token::Str(s) => format!("string \"{s}\""),
            Token::Int(i) => format!("number {i}"),
            Token::True => "'true'".into(),
            Token::False => "'false'".into(),
            Token::In => "'in'".into(),
            Token::LParen => "'('".into(),
            Token::RParen => "')'".into(),
            Token::LBracket => "'['".into(),
            Token::RBracket => "']'".into(),
            Token::Comma => "','".into(),
            Token::Dot => "'.'".into(),
            Token::Not => "'!'".into(),
            Token::AndAnd => "'&&'".into(),
            Token::OrOr => "'||'".into(),
            Token::Pipe => "'|'".into(),
            Token::EqEq => "'=='".into(),
            Token::NotEq => "'!='".into(),
            Token::Eof => "end of expression".into(),
        }
    }
}

/// A token and the column of its first character.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    pub token: Token,
    pub column: usize,
}

pub fn tokenize(source: &str) -> Result<Vec<Spanned>, SyntaxError> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let column = i + 1;
        let (token, end) = match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '"' | '\'' => {
                let (value, end) = string_literal(&chars, i)?;
                (Token::Str(value), end)
            }
            c if c.is_ascii_digit() => number(&chars, i)?,
            c if c.is_ascii_alphabetic() || c == '_' => word(&chars, i),
            c => {
                let (token, length) = punctuation(c, chars.get(i + 1).copied(), column)?;
                (token, i + length)
            }
        };
        tokens.push(Spanned { token, column });
        i = end;
    }
    tokens.push(Spanned {
        token: Token::Eof,
        column: chars.len() + 1,
    });
    Ok(tokens)
}

/// An operator or bracket of one or two characters, and its length.
fn punctuation(c: char, next: Option<char>, column: usize) -> Result<(Token, usize), SyntaxError> {
    let token = match (c, next) {
        ('(', _) => Token::LParen,
        (')', _) => Token::RParen,
        ('[', _) => Token::LBracket,
        (']', _) => Token::RBracket,
        (',', _) => Token::Comma,
        ('.', _) => Token::Dot,
        ('!', Some('=')) => return Ok((Token::NotEq, 2)),
        ('!', _) => Token::Not,
        ('=', Some('=')) => return Ok((Token::EqEq, 2)),
        ('=', _) => return Err(SyntaxError::new(column, "'=' is not an operator; use '=='")),
        ('&', Some('&')) => return Ok((Token::AndAnd, 2)),
        ('&', _) => return Err(SyntaxError::new(column, "'&' is not an operator; use '&&'")),
        ('|', Some('|')) => return Ok((Token::OrOr, 2)),
        ('|', _) => Token::Pipe,
        (other, _) => {
            return Err(SyntaxError::new(
                column,
                format!("unexpected character {other:?}"),
            ));
        }
    };
    Ok((token, 1))
}

/// The decimal integer starting at `start`, and the index after it.
fn number(chars: &[char], start: usize) -> Result<(Token, usize), SyntaxError> {
    let mut end = start;
    while chars.get(end).is_some_and(char::is_ascii_digit) {
        end += 1;
    }
    let text: String = chars.get(start..end).unwrap_or_default().iter().collect();
    let value = text.parse::<i64>().map_err(|_| {
        SyntaxError::new(start + 1, format!("number {text} does not fit in 64 bits"))
    })?;
    Ok((Token::Int(value), end))
}

/// The identifier or keyword starting at `start`, and the index after it.
fn word(chars: &[char], start: usize) -> (Token, usize) {
    let mut end = start;
    while chars
        .get(end)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
    {
        end += 1;
    }
    let word: String = chars.get(start..end).unwrap_or_default().iter().collect();
    let token = match word.as_str() {
        "true" => Token::True,
        "false" => Token::False,
        "in" => Token::In,
        _ => Token::Ident(word),
    };
    (token, end)
}

/// Reads a quoted string starting at `start`; returns its value and the index after the quote.
fn string_literal(chars: &[char], start: usize) -> Result<(String, usize), SyntaxError> {
    let quote = chars.get(start).copied().unwrap_or('"');
    let mut value = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(SyntaxError::new(
                    start + 1,
                    "string literal is not terminated",
                ));
            }
            Some(&c) if c == quote => return Ok((value, i + 1)),
            Some('\\') => {
                let escaped = match chars.get(i + 1) {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('\\') => '\\',
                    Some('"') => '"',
                    Some('\'') => '\'',
                    Some(other) => {
                        return Err(SyntaxError::new(
                            i + 1,
                            format!("unknown escape '\\{other}' in string literal"),
                        ));
                    }
                    None => {
                        return Err(SyntaxError::new(
                            start + 1,
                            "string literal is not terminated",
                        ));
                    }
                };
                value.push(escaped);
                i += 2;
            }
            Some(&c) => {
                value.push(c);
                i += 1;
            }
        }
    }
}
