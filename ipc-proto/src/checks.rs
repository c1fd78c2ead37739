//! Checks that keep the protocol's encoding rules (PROTOCOL.md §2) strict: maps use string keys
//! (a decoder that accepted integer keys would take them as struct field positions), and a
//! `json` value is one that JSON can carry unchanged.

use rmpv::Value;

/// The `type` of a message map (its str value), scanning the top-level map without building
/// anything; `Ok(None)` when the map has no `type` (or its value is not a str). With
/// `string_keys`, a non-string key is refused (PROTOCOL.md §2: a struct would take an integer
/// key as a field position); without, it is skipped.
///
/// Why: serde's internally tagged enums buffer the whole message into its `Content` tree to
/// find the tag, which was the largest single cost of decoding a small message (its data copied
/// once more, an allocation per field). Knowing the type first, the body decodes straight into
/// its struct.
pub(crate) fn message_type(body: &[u8], string_keys: bool) -> Result<Option<&str>, String> {
    let mut r = Reader { buf: body, pos: 0 };
    let Some(n) = r.map_len()? else {
        return Err("a message must be a map".to_string());
    };
    let mut found = None;
    for i in 0..n {
        let m = r.byte()?;
        let len = match m {
            0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => r.uint(1)?,
            0xda => r.uint(2)?,
            0xdb => r.uint(4)?,
            _ if string_keys => {
                return Err(format!(
                    "key {i} of the message map is not a string (maps use string keys, \
                     PROTOCOL.md §2)"
                ))
            }
            _ => {
                r.pos -= 1;
                r.skip_values(2)?;
                continue;
            }
        };
        let start = r.pos;
        r.advance(len)?;
        if &body[start..r.pos] == b"type" && found.is_none() {
            found = r.str_value()?;
            if found.is_some() && !string_keys {
                return Ok(found);
            }
            continue;
        }
        r.skip_values(1)?;
    }
    Ok(found)
}

/// The length in bytes of the first MessagePack value in `body`, found without building it.
pub(crate) fn value_len(body: &[u8]) -> Result<usize, String> {
    let mut r = Reader { buf: body, pos: 0 };
    r.skip_values(1)?;
    Ok(r.pos)
}

/// A cursor over MessagePack bytes that skips values without building them (and without
/// recursion, so nesting cannot overflow the stack).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn truncated() -> String {
        "truncated MessagePack value".to_string()
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or_else(Self::truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 8) | u64::from(self.byte()?);
        }
        Ok(v)
    }

    fn advance(&mut self, n: u64) -> Result<(), String> {
        let rest = (self.buf.len() - self.pos) as u64;
        if n > rest {
            return Err(Self::truncated());
        }
        self.pos += n as usize;
        Ok(())
    }

    /// The next value if it is a str (consumed), else `None` (the value is skipped).
    fn str_value(&mut self) -> Result<Option<&'a str>, String> {
        let m = *self.buf.get(self.pos).ok_or_else(Self::truncated)?;
        let len = match m {
            0xa0..=0xbf => {
                self.pos += 1;
                u64::from(m & 0x1f)
            }
            0xd9..=0xdb => {
                self.pos += 1;
                self.uint(1 << (m - 0xd9))?
            }
            _ => {
                self.skip_values(1)?;
                return Ok(None);
            }
        };
        let start = self.pos;
        self.advance(len)?;
        Ok(std::str::from_utf8(&self.buf[start..self.pos]).ok())
    }

    /// The entry count if the next value is a map (consuming its header), else `None`.
    fn map_len(&mut self) -> Result<Option<u64>, String> {
        let Some(&m) = self.buf.get(self.pos) else {
            return Ok(None);
        };
        let n = match m {
            0x80..=0x8f => u64::from(m & 0x0f),
            0xde | 0xdf => {
                self.pos += 1;
                return self.uint(if m == 0xde { 2 } else { 4 }).map(Some);
            }
            _ => return Ok(None),
        };
        self.pos += 1;
        Ok(Some(n))
    }

    /// Skips `count` whole values.
    fn skip_values(&mut self, mut count: u64) -> Result<(), String> {
        while count > 0 {
            count -= 1;
            let m = self.byte()?;
            let (skip, items) = match m {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (0, 2 * u64::from(m & 0x0f)),
                0x90..=0x9f => (0, u64::from(m & 0x0f)),
                0xa0..=0xbf => (u64::from(m & 0x1f), 0),
                0xc4 | 0xd9 => (self.uint(1)?, 0),
                0xc5 | 0xda => (self.uint(2)?, 0),
                0xc6 | 0xdb => (self.uint(4)?, 0),
                0xc7 => (self.uint(1)? + 1, 0),
                0xc8 => (self.uint(2)? + 1, 0),
                0xc9 => (self.uint(4)? + 1, 0),
                0xca => (4, 0),
                0xcb => (8, 0),
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 => (2, 0),
                0xce | 0xd2 => (4, 0),
                0xcf | 0xd3 => (8, 0),
                0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xd6 => (5, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                0xdc => (0, self.uint(2)?),
                0xdd => (0, self.uint(4)?),
                0xde => (0, 2 * self.uint(2)?),
                0xdf => (0, 2 * self.uint(4)?),
                _ => return Err(format!("invalid MessagePack marker 0x{m:02x}")),
            };
            self.advance(skip)?;
            // Every value takes at least one byte: a count beyond what is left is a lie.
            count = count.saturating_add(items);
            if count > (self.buf.len() - self.pos) as u64 {
                return Err(Self::truncated());
            }
        }
        Ok(())
    }
}

/// Checks that every map in `v` has string keys; `Err` names the path of the first that does
/// not (e.g. `options.verify`).
pub(crate) fn string_keys(v: &Value, path: &str) -> Result<(), String> {
    match v {
        Value::Map(m) => {
            for (k, v) in m {
                let Some(k) = k.as_str() else {
                    return Err(format!(
                        "{} has a non-string key ({k}); maps use string keys",
                        display(path)
                    ));
                };
                string_keys(v, &join(path, k))?;
            }
            Ok(())
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| string_keys(v, &format!("{path}[{i}]"))),
        _ => Ok(()),
    }
}

/// Checks that `v` survives JSON unchanged: no `bin` or extension values, maps with string
/// keys, finite floats, valid UTF-8 strings. `Err` names the path of the first offence.
pub fn json_compatible(v: &Value, path: &str) -> Result<(), String> {
    let why = match v {
        Value::Nil | Value::Boolean(_) | Value::Integer(_) => return Ok(()),
        Value::F32(f) if f.is_finite() => return Ok(()),
        Value::F64(f) if f.is_finite() => return Ok(()),
        Value::F32(_) | Value::F64(_) => "is NaN or infinite, which JSON cannot carry",
        Value::String(s) if s.is_str() => return Ok(()),
        Value::String(_) => "is not valid UTF-8",
        Value::Binary(_) => "is bin, which JSON cannot carry (send type `bytes`, or base64 it)",
        Value::Ext(..) => "is a MessagePack extension, which JSON cannot carry",
        Value::Array(a) => {
            return a
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| json_compatible(v, &format!("{path}[{i}]")))
        }
        Value::Map(m) => {
            for (k, v) in m {
                let Some(k) = k.as_str() else {
                    return Err(format!(
                        "{} has a non-string key ({k}), which JSON would turn into a string",
                        display(path)
                    ));
                };
                json_compatible(v, &join(path, k))?;
            }
            return Ok(());
        }
    };
    Err(format!("{} {why}", display(path)))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn display(path: &str) -> String {
    if path.is_empty() {
        "the value".to_string()
    } else {
        format!("`{path}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut b = Vec::new();
        rmpv::encode::write_value(&mut b, v).expect("encode");
        b
    }

    #[test]
    fn top_level_integer_keys_are_found_and_nested_data_is_skipped() {
        let ok = Value::Map(vec![
            (
                "args".into(),
                Value::Map(vec![(Value::from(1), Value::Binary(vec![0; 300]))]),
            ),
            ("x".into(), Value::Array(vec![Value::from(1.5), Value::Nil])),
            ("type".into(), "request".into()),
        ]);
        assert_eq!(message_type(&enc(&ok), true), Ok(Some("request")));
        let bad = Value::Map(vec![
            ("type".into(), "hello".into()),
            (Value::from(0), Value::from(1)),
        ]);
        let e = message_type(&enc(&bad), true).expect_err("integer key");
        assert!(e.contains("not a string"), "{e}");
        // Without the key check the type is found and the integer key skipped.
        assert_eq!(message_type(&enc(&bad), false), Ok(Some("hello")));
        assert!(message_type(&[0x81, 0xa1], true).is_err());
        assert!(message_type(&[0xdf, 0xff, 0xff, 0xff, 0xff], true).is_err());
        assert!(message_type(&[0x01], true).is_err());
        let untyped = Value::Map(vec![("type".into(), Value::from(3))]);
        assert_eq!(message_type(&enc(&untyped), true), Ok(None));
        let long = Value::Map(vec![("type".into(), "e".repeat(300).into())]);
        assert_eq!(
            message_type(&enc(&long), false),
            Ok(Some("e".repeat(300).as_str()))
        );
    }

    #[test]
    fn value_len_is_the_first_values_extent() {
        let v = Value::Map(vec![
            ("data".into(), Value::Binary(vec![7; 70_000])),
            (
                "n".into(),
                Value::Array(vec![Value::from(1u64 << 40), Value::Nil]),
            ),
        ]);
        let mut b = enc(&v);
        let len = b.len();
        assert_eq!(value_len(&b), Ok(len));
        b.extend_from_slice(&[0xc0, 0x01]);
        assert_eq!(value_len(&b), Ok(len));
        assert!(value_len(&b[..len - 1]).is_err());
        assert!(value_len(&[]).is_err());
    }

    #[test]
    fn json_compatibility_names_the_offending_path() {
        let v = Value::Map(vec![(
            "a".into(),
            Value::Array(vec![Value::from(1), Value::F64(f64::NAN)]),
        )]);
        let e = json_compatible(&v, "data").expect_err("NaN");
        assert!(e.contains("`data.a[1]`") && e.contains("NaN"), "{e}");
        let v = Value::Map(vec![(Value::from(7), Value::Nil)]);
        assert!(json_compatible(&v, "data")
            .expect_err("int key")
            .contains("non-string key"));
        assert!(json_compatible(&Value::Binary(vec![1]), "data").is_err());
        assert!(json_compatible(&Value::from("ok"), "data").is_ok());
    }
}
