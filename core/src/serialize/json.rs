//! The JSON a safetensors header needs and no more: a parser into [`Value`] that keeps each
//! object's keys in file order, and a string writer that escapes as serde_json does, so that
//! the headers torchlet writes match the safetensors library's byte for byte.
//!
//! Numbers keep their text: sizes and offsets are read as `usize` where they are used, and a
//! number anywhere else (a float in `__metadata__`, say) is checked for syntax only.

use std::collections::HashSet;

/// Nesting deeper than this is refused, so that a hostile header (`[[[[…`) cannot overflow
/// the stack. A valid header nests three deep: header → tensor entry → shape.
const MAX_DEPTH: usize = 64;

/// A parsed JSON value.
#[derive(Debug, PartialEq)]
pub(super) enum Value<'a> {
    Null,
    Bool(bool),
    /// The number's text, valid JSON number syntax (`-1.5e3`).
    Number(&'a str),
    String(String),
    Array(Vec<Value<'a>>),
    /// Members in file order; the parser refuses an object with a key twice.
    Object(Vec<(String, Value<'a>)>),
}

impl<'a> Value<'a> {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A non-negative integer that fits a `usize`; `None` for a fraction, an exponent, a
    /// negative number or anything that is not a number.
    pub(super) fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Number(text) if text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
            _ => None,
        }
    }

    pub(super) fn as_array(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The member `key` of an object; `None` for a missing key or a value that is not an object.
    pub(super) fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What the value is, for messages: "a string", "an array", ….
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Parses `text` as one JSON value with nothing but whitespace around it.
///
/// # Errors
/// What is wrong and at which byte of `text`.
pub(super) fn parse(text: &str) -> Result<Value<'_>, String> {
    let mut parser = Parser { text, pos: 0 };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != text.len() {
        return Err(parser.error("unexpected characters after the JSON value"));
    }
    Ok(value)
}

/// A cursor over the text. `pos` only ever stops on an ASCII byte or at the end, so it is
/// always a char boundary and slicing `text` at it cannot fail.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.pos)
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", byte as char)))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, String> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(_) => Err(self.error("expected a JSON value")),
            None => Err(self.error("unexpected end")),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(self.error(&format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, String> {
        self.enter(depth)?;
        self.expect(b'{')?;
        let mut members = Vec::new();
        self.skip_whitespace();
        if !self.eat(b'}') {
            loop {
                self.skip_whitespace();
                if self.peek() != Some(b'"') {
                    return Err(self.error("expected a string key"));
                }
                let key = self.string()?;
                self.skip_whitespace();
                self.expect(b':')?;
                members.push((key, self.value(depth)?));
                self.skip_whitespace();
                if !self.eat(b',') {
                    self.expect(b'}')?;
                    break;
                }
            }
        }
        let mut keys = HashSet::with_capacity(members.len());
        if let Some((key, _)) = members.iter().find(|(k, _)| !keys.insert(k.as_str())) {
            return Err(self.error(&format!("key `{key}` appears twice in the object ending")));
        }
        Ok(Value::Object(members))
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, String> {
        self.enter(depth)?;
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.eat(b']') {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            if !self.eat(b',') {
                self.expect(b']')?;
                return Ok(Value::Array(items));
            }
        }
    }

    fn literal(&mut self, word: &str, value: Value<'a>) -> Result<Value<'a>, String> {
        if !self.text[self.pos..].starts_with(word) {
            return Err(self.error("expected a JSON value"));
        }
        self.pos += word.len();
        Ok(value)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, as RFC 8259 has it.
    fn number(&mut self) -> Result<Value<'a>, String> {
        let start = self.pos;
        self.eat(b'-');
        if !self.eat(b'0') {
            self.digits()?;
        }
        if self.eat(b'.') {
            self.digits()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _sign = self.eat(b'+') || self.eat(b'-');
            self.digits()?;
        }
        Ok(Value::Number(&self.text[start..self.pos]))
    }

    /// One or more decimal digits.
    fn digits(&mut self) -> Result<(), String> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.error("expected a digit"));
        }
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while matches!(self.peek(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.pos += 1;
            }
            // Stops on an ASCII byte or at the end: a char boundary (see `Parser`).
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                }
                Some(_) => return Err(self.error("control character in a string (escape it)")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// The character of the escape after a `\`.
    fn escape(&mut self) -> Result<char, String> {
        let Some(byte) = self.peek() else {
            return Err(self.error("unterminated string"));
        };
        self.pos += 1;
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(),
            _ => return Err(self.error("unknown escape")),
        })
    }

    /// `\uXXXX`, or a UTF-16 surrogate pair `\uD83D\uDE00` for a character past U+FFFF.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !(self.eat(b'\\') && self.eat(b'u')) {
                    return Err(self.error("a high surrogate \\u escape without its low half"));
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("a high surrogate \\u escape without its low half"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("a low surrogate \\u escape on its own")),
            _ => first,
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or_else(|| self.error("expected four hex digits after \\u"))?;
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it: `"` and `\` with a
/// backslash, the control characters with a short form as `\b \t \n \f \r`, the other control
/// characters as `\u00xx` (lower-case hex), everything else (non-ASCII included) as it is.
pub(super) fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\0'..='\u{1f}' => {
                let b = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Value<'static> {
        Value::String(s.to_string())
    }

    #[test]
    fn parses_every_kind_of_value_keeping_key_order() {
        let cases: Vec<(&str, Value)> = vec![
            ("null", Value::Null),
            (" true ", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("0", Value::Number("0")),
            ("-12.5e+3", Value::Number("-12.5e+3")),
            ("1E9", Value::Number("1E9")),
            ("\"\"", string("")),
            ("[]", Value::Array(vec![])),
            ("{}", Value::Object(vec![])),
            (
                "\t{ \"b\" : [1, 2] ,\n\"a\":{}}\r\n   ",
                Value::Object(vec![
                    (
                        "b".into(),
                        Value::Array(vec![Value::Number("1"), Value::Number("2")]),
                    ),
                    ("a".into(), Value::Object(vec![])),
                ]),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn decodes_escapes_and_surrogate_pairs() {
        let cases = [
            (r#""a\"b\\c\/d""#, "a\"b\\c/d"),
            (r#""\b\f\n\r\t""#, "\u{8}\u{c}\n\r\t"),
            (r#""\u0041\u00e9\u20AC""#, "Aé€"),
            (r#""\ud83d\ude00""#, "😀"),
            ("\"é€😀\u{7f}\"", "é€😀\u{7f}"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(string(want)), "{text}");
        }
    }

    #[test]
    fn refuses_invalid_json_with_the_byte_offset() {
        let cases = [
            ("", "unexpected end at byte 0"),
            ("{", "expected a string key at byte 1"),
            ("{\"a\" 1}", "expected `:` at byte 5"),
            ("{\"a\":1,}", "expected a string key at byte 7"),
            ("[1,]", "expected a JSON value at byte 3"),
            ("[1 2]", "expected `]` at byte 3"),
            ("{\"a\":1,\"a\":2}", "key `a` appears twice"),
            ("01", "unexpected characters after the JSON value at byte 1"),
            ("-", "expected a digit at byte 1"),
            ("1.", "expected a digit at byte 2"),
            ("1e", "expected a digit at byte 2"),
            ("tru", "expected a JSON value at byte 0"),
            ("\"abc", "unterminated string at byte 4"),
            ("\"a\nb\"", "control character in a string"),
            (r#""\x""#, "unknown escape at byte 3"),
            (r#""\u12""#, "expected four hex digits"),
            (r#""\ud83d""#, "without its low half"),
            (r#""\ud83d\u0041""#, "without its low half"),
            (r#""\ude00""#, "a low surrogate"),
            (
                "{} {}",
                "unexpected characters after the JSON value at byte 3",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        let deep = "[".repeat(100_000);
        assert!(parse(&deep).unwrap_err().contains("nested deeper than"));
        let deep = "{\"a\":".repeat(100_000);
        assert!(parse(&deep).unwrap_err().contains("nested deeper than"));
    }

    #[test]
    fn reads_sizes_as_usize_only_when_they_are_plain_integers() {
        let sizes: Vec<Option<usize>> = ["0", "42", "-1", "1.0", "1e3", "99999999999999999999999"]
            .iter()
            .map(|t| parse(t).unwrap().as_usize())
            .collect();
        assert_eq!(sizes, [Some(0), Some(42), None, None, None, None]);
        assert_eq!(string("7").as_usize(), None);
    }

    #[test]
    fn written_strings_escape_like_serde_json_and_read_back() {
        let mut out = String::new();
        write_string(&mut out, "a\"\\\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}é/");
        assert_eq!(
            out,
            r#""a\"\\\u0001\b\f\n\r\t\u001f"#.to_string() + "\u{7f}é/\""
        );
        let every_char: String = (0..0x800)
            .filter_map(char::from_u32)
            .chain(['😀'])
            .collect();
        let mut out = String::new();
        write_string(&mut out, &every_char);
        assert_eq!(parse(&out), Ok(Value::String(every_char)));
    }
}
