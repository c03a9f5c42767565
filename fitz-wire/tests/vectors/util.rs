//! JSON helpers shared by the per-domain vector modules.

use serde_json::{Map, Value};

pub type Fields = Map<String, Value>;
pub type R<T> = Result<T, String>;

/// What a vector says about the session and the request it belongs to.
pub struct Ctx<'v> {
    pub dialect: fitz_wire::Dialect,
    pub capabilities: fitz_wire::Capabilities,
    pub raw: &'v Value,
}

impl Ctx<'_> {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key).filter(|v| !v.is_null())
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }
}

pub fn hex(s: &str) -> R<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd hex length {}", s.len()));
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bad hex: {e}"))).collect()
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Looks a field up under any of its names (legacy and current vectors
/// name some fields differently, e.g. `token` / `fencing_token`).
pub fn field<'a>(f: &'a Fields, names: &[&str]) -> R<&'a Value> {
    names.iter().find_map(|n| f.get(*n)).ok_or_else(|| format!("missing field {}", names.join("|")))
}

pub fn u64_of(v: &Value) -> R<u64> {
    v.as_u64().ok_or_else(|| format!("not a u64: {v}"))
}

pub fn get_u64(f: &Fields, names: &[&str]) -> R<u64> {
    u64_of(field(f, names)?)
}

pub fn get_u32(f: &Fields, names: &[&str]) -> R<u32> {
    u32::try_from(get_u64(f, names)?).map_err(|e| e.to_string())
}

pub fn get_opt_u64(f: &Fields, names: &[&str]) -> R<Option<u64>> {
    match names.iter().find_map(|n| f.get(*n)) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => u64_of(v).map(Some),
    }
}

pub fn get_str<'a>(f: &'a Fields, names: &[&str]) -> R<&'a str> {
    field(f, names)?.as_str().ok_or_else(|| format!("{} is not a string", names[0]))
}

pub fn get_opt_str<'a>(f: &'a Fields, names: &[&str]) -> R<Option<&'a str>> {
    match names.iter().find_map(|n| f.get(*n)) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| format!("{} is not a string", names[0])),
    }
}

pub fn get_bytes(f: &Fields, names: &[&str]) -> R<Vec<u8>> {
    hex(get_str(f, names)?)
}

pub fn get_opt_bytes(f: &Fields, names: &[&str]) -> R<Option<Vec<u8>>> {
    get_opt_str(f, names)?.map(hex).transpose()
}

pub fn get_bool(f: &Fields, names: &[&str]) -> R<bool> {
    field(f, names)?.as_bool().ok_or_else(|| format!("{} is not a bool", names[0]))
}

/// True for the name of a message a client of the domain `prefix` (e.g.
/// `"KV_"`) sends: neither a reply (`*_RESPONSE`) nor the domain's NOTIFY.
pub fn is_request(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|op| op != "NOTIFY") && !name.ends_with("_RESPONSE")
}

/// Encodes a request into record bytes (header + payload).
pub fn record<E: fitz_wire::Encode>(msg: &E) -> R<Vec<u8>> {
    let mut buf = vec![0u8; fitz_wire::record::encoded_len(msg)];
    let n = fitz_wire::record::encode(msg, &mut buf).map_err(|e| format!("encode: {e}"))?;
    if n != buf.len() {
        return Err(format!("encoded_len {} but wrote {n}", buf.len()));
    }
    Ok(buf)
}

/// Encodes just the payload of `msg`.
pub fn payload<'a, P: fitz_wire::Payload<'a>>(msg: &P) -> Vec<u8> {
    let mut out = vec![0u8; msg.payload_len()];
    let mut w = fitz_wire::SliceWriter::new(&mut out);
    msg.write_payload(&mut w);
    assert!(!w.overflowed() && w.position() == out.len(), "payload_len disagrees with write_payload");
    out
}

/// Builder for the decoded-fields object.
#[derive(Default)]
pub struct Out(pub Fields);

impl Out {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.0.insert(k.to_owned(), v.into());
        self
    }
    /// Sets the same value under several names (aliases across the sets).
    pub fn alias(mut self, ks: &[&str], v: impl Into<Value>) -> Self {
        let v = v.into();
        for k in ks {
            self.0.insert((*k).to_owned(), v.clone());
        }
        self
    }
    pub fn bytes(self, k: &str, b: &[u8]) -> Self {
        self.set(k, to_hex(b))
    }
    pub fn opt_bytes(self, k: &str, b: Option<&[u8]>) -> Self {
        self.set(k, b.map_or(Value::Null, |b| Value::String(to_hex(b))))
    }
    pub fn opt_u64(self, k: &str, v: Option<u64>) -> Self {
        self.set(k, v.map_or(Value::Null, Value::from))
    }
    pub fn opt_str(self, k: &str, v: Option<&str>) -> Self {
        self.set(k, v.map_or(Value::Null, Value::from))
    }
    pub fn done(self) -> Fields {
        self.0
    }
}

/// The decoded fields of a reply: `status` plus the ok fields, or the error.
pub fn reply_fields<T>(reply: &fitz_wire::Reply<'_, T>, ok: impl FnOnce(&T, Out) -> Out) -> Fields {
    match reply {
        fitz_wire::Reply::Ok(v) => ok(v, Out::new().set("status", "ok")).done(),
        fitz_wire::Reply::Err(e) => Out::new()
            .set("status", "error")
            .set("error_code", e.code.map_or(Value::Null, Value::from))
            .set("error_message", e.message)
            .done(),
    }
}

/// What a domain module returns for a decoded payload: the fields it read
/// and the payload re-encoded from them.
pub struct Decoded {
    pub fields: Fields,
    pub reencoded: Vec<u8>,
}

pub fn decoded<'a, P: fitz_wire::Payload<'a>>(fields: Fields, msg: &P) -> R<Decoded> {
    Ok(Decoded { fields, reencoded: payload(msg) })
}

/// A decoded message: the fields `fields` lists from it, and its re-encoding.
pub fn message<'a, P: fitz_wire::Payload<'a>>(
    result: Result<P, fitz_wire::DecodeError>,
    fields: impl FnOnce(&P, Out) -> Out,
) -> R<Decoded> {
    let m = result.map_err(|e| e.to_string())?;
    decoded(fields(&m, Out::new()).done(), &m)
}

/// A decoded reply: the `envelope` context is checked, then the fields are
/// `status` plus what `ok` lists from the success fields, or the error.
pub fn reply<'a, T: fitz_wire::Payload<'a>>(
    result: Result<fitz_wire::Reply<'a, T>, fitz_wire::DecodeError>,
    ctx: &Ctx<'_>,
    ok: impl FnOnce(&T, Out) -> Out,
) -> R<Decoded> {
    let r = result.map_err(|e| e.to_string())?;
    check_envelope(ctx, &r)?;
    decoded(reply_fields(&r, ok), &r)
}

/// A decoded reply with no success fields.
pub fn ack(result: Result<fitz_wire::Reply<'_, ()>, fitz_wire::DecodeError>, ctx: &Ctx<'_>) -> R<Decoded> {
    reply(result, ctx, |_, o| o)
}

/// Checks the `envelope` context against the shape that was decoded.
pub fn check_envelope<T>(ctx: &Ctx<'_>, reply: &fitz_wire::Reply<'_, T>) -> R<()> {
    use fitz_wire::Envelope;
    if let (fitz_wire::Reply::Err(e), Some(env)) = (reply, ctx.str("envelope")) {
        let ok = matches!(
            (env, e.envelope),
            ("coded", Envelope::Coded) | ("plain", Envelope::Uncoded) | ("status-2", Envelope::Status2)
                // Pre-dispatch errors are coded even where domain errors are plain.
                | ("plain", Envelope::Coded)
        );
        if !ok {
            return Err(format!("envelope {env} but decoded {:?}", e.envelope));
        }
    }
    Ok(())
}
