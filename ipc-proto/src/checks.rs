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

    /// What follows marker `m` (already consumed): the bytes of its own payload to skip, the
    /// values it contains, and whether it is a map (whose even values are keys).
    fn marker(&mut self, m: u8) -> Result<(u64, u64, bool), String> {
        Ok(match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, false),
            0x80..=0x8f => (0, 2 * u64::from(m & 0x0f), true),
            0x90..=0x9f => (0, u64::from(m & 0x0f), false),
            0xa0..=0xbf => (u64::from(m & 0x1f), 0, false),
            0xc4 | 0xd9 => (self.uint(1)?, 0, false),
            0xc5 | 0xda => (self.uint(2)?, 0, false),
            0xc6 | 0xdb => (self.uint(4)?, 0, false),
            0xc7 => (self.uint(1)? + 1, 0, false),
            0xc8 => (self.uint(2)? + 1, 0, false),
            0xc9 => (self.uint(4)? + 1, 0, false),
            0xca => (4, 0, false),
            0xcb => (8, 0, false),
            0xcc | 0xd0 => (1, 0, false),
            0xcd | 0xd1 => (2, 0, false),
            0xce | 0xd2 => (4, 0, false),
            0xcf | 0xd3 => (8, 0, false),
            0xd4 => (2, 0, false),
            0xd5 => (3, 0, false),
            0xd6 => (5, 0, false),
            0xd7 => (9, 0, false),
            0xd8 => (17, 0, false),
            0xdc => (0, self.uint(2)?, false),
            0xdd => (0, self.uint(4)?, false),
            0xde => (0, 2 * self.uint(2)?, true),
            0xdf => (0, 2 * self.uint(4)?, true),
            _ => return Err(format!("invalid MessagePack marker 0x{m:02x}")),
        })
    }

    /// Skips `count` whole values.
    fn skip_values(&mut self, mut count: u64) -> Result<(), String> {
        while count > 0 {
            count -= 1;
            let m = self.byte()?;
            let (skip, items, _) = self.marker(m)?;
            self.advance(skip)?;
            // Every value takes at least one byte: a count beyond what is left is a lie.
            count = count.saturating_add(items);
            if count > (self.buf.len() - self.pos) as u64 {
                return Err(Self::truncated());
            }
        }
        Ok(())
    }

    /// The next value if it is an unsigned integer (consumed), else `None` (not consumed).
    fn uint_value(&mut self) -> Result<Option<u64>, String> {
        let m = *self.buf.get(self.pos).ok_or_else(Self::truncated)?;
        let n = match m {
            0x00..=0x7f => 0,
            0xcc..=0xcf => 1 << (m - 0xcc),
            _ => return Ok(None),
        };
        self.pos += 1;
        if n == 0 {
            return Ok(Some(u64::from(m)));
        }
        self.uint(n).map(Some)
    }
}

/// The `id` of a `reply` message, read from the top-level map without building anything and
/// without reading past its `type` and `id`; `None` for any other message, or for one whose
/// `type` or `id` is not what a reply has (the caller then decodes it the ordinary way, which
/// says what is wrong). The rest of the frame is left to the decoder to check.
pub(crate) fn reply_id(body: &[u8]) -> Option<u64> {
    let mut r = Reader { buf: body, pos: 0 };
    let n = r.map_len().ok()??;
    let (mut reply, mut id) = (false, None);
    // Stops as soon as the answer is known: every frame a client reads comes here first, and
    // an event's `data` (up to 64 KiB of a message) would otherwise be walked for nothing.
    for _ in 0..n {
        match r.str_value().ok()?? {
            "type" if r.str_value().ok()? == Some("reply") => reply = true,
            "type" => return None,
            "id" => id = Some(r.uint_value().ok()??),
            _ => r.skip_values(1).ok()?,
        }
        if reply && id.is_some() {
            return id;
        }
    }
    None
}

/// Checks that every map in the first MessagePack value of `body` has string keys, like
/// [`string_keys`] but on the bytes, building nothing (and without recursion); returns the
/// value's length, as [`value_len`] would, since the walk has found it.
pub(crate) fn raw_string_keys(body: &[u8]) -> Result<usize, String> {
    let mut r = Reader { buf: body, pos: 0 };
    // The containers being read: values left in each, and whether it is a map.
    let mut open: Vec<(u64, bool)> = vec![(1, false)];
    while let Some(top) = open.last_mut() {
        if top.0 == 0 {
            open.pop();
            continue;
        }
        // A map's values alternate key, value, starting with a key: an even count left.
        let key = top.1 && top.0 % 2 == 0;
        top.0 -= 1;
        let m = r.byte()?;
        if key && !matches!(m, 0xa0..=0xbf | 0xd9..=0xdb) {
            return Err(
                "a map has a non-string key; maps use string keys (PROTOCOL.md §2)".to_string(),
            );
        }
        let (skip, items, map) = r.marker(m)?;
        r.advance(skip)?;
        if items > 0 {
            if items > (r.buf.len() - r.pos) as u64 {
                return Err(Reader::truncated());
            }
            open.push((items, map));
        }
    }
    Ok(r.pos)
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
    fn reply_ids_are_read_from_replies_only() {
        let reply = |id: Value| {
            enc(&Value::Map(vec![
                ("type".into(), "reply".into()),
                ("id".into(), id),
                ("ok".into(), true.into()),
                ("result".into(), Value::Map(vec![("x".into(), 1.into())])),
            ]))
        };
        assert_eq!(reply_id(&reply(Value::from(7))), Some(7));
        assert_eq!(reply_id(&reply(Value::from(300))), Some(300));
        assert_eq!(reply_id(&reply(Value::from(u64::MAX))), Some(u64::MAX));
        // Not an unsigned id, or not a reply: left to the ordinary decoder.
        assert_eq!(reply_id(&reply(Value::from(-1))), None);
        assert_eq!(reply_id(&reply(Value::from("7"))), None);
        let event = Value::Map(vec![
            ("type".into(), "event".into()),
            ("id".into(), 7.into()),
        ]);
        assert_eq!(reply_id(&enc(&event)), None);
        let no_id = Value::Map(vec![("type".into(), "reply".into())]);
        assert_eq!(reply_id(&enc(&no_id)), None);
        let int_key = Value::Map(vec![
            ("type".into(), "reply".into()),
            (Value::from(0), 7.into()),
            ("id".into(), 7.into()),
        ]);
        assert_eq!(reply_id(&enc(&int_key)), None);
        // Only the map header, `type` and `id` are read (1 + 5 + 6 + 3 + 1 bytes here): what
        // follows is the decoder's to check, so a cut after the id still routes the frame.
        let r = reply(Value::from(7));
        for cut in 0..r.len() {
            let routed = if cut >= 16 { Some(7) } else { None };
            assert_eq!(reply_id(&r[..cut]), routed, "cut at {cut}");
        }
        // An event is recognised by its first key, whatever follows.
        assert_eq!(
            reply_id(&[0x82, 0xa4, b't', b'y', b'p', b'e', 0xa5, b'e', b'v', b'e', b'n', b't']),
            None
        );
    }

    #[test]
    fn raw_string_keys_agrees_with_the_value_check() {
        let nested = |key: Value| {
            Value::Map(vec![
                (
                    "a".into(),
                    Value::Array(vec![Value::Nil, Value::Map(vec![(key, 1.into())])]),
                ),
                ("b".into(), Value::Binary(vec![0x80; 40])),
            ])
        };
        let good = nested("k".into());
        let mut b = enc(&good);
        let len = b.len();
        b.push(0xc0);
        assert_eq!(raw_string_keys(&b), Ok(len));
        assert_eq!(value_len(&b), Ok(len));
        assert!(string_keys(&good, "").is_ok());
        for key in [Value::from(0), Value::Nil, Value::Binary(b"k".to_vec())] {
            let bad = nested(key);
            let e = raw_string_keys(&enc(&bad)).expect_err("non-string key");
            assert!(e.contains("non-string key"), "{e}");
            assert!(string_keys(&bad, "").is_err());
        }
        // Map values that look like maps or integers are values, not keys.
        let values = Value::Map(vec![
            ("m".into(), Value::Map(vec![])),
            ("n".into(), 3.into()),
        ]);
        assert!(raw_string_keys(&enc(&values)).is_ok());
        let b = enc(&good);
        for cut in 0..b.len() {
            assert!(raw_string_keys(&b[..cut]).is_err(), "cut at {cut}");
        }
        assert!(raw_string_keys(&[0xdf, 0xff, 0xff, 0xff, 0xff]).is_err());
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
