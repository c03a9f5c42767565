//! RPC vectors (legacy and current).

use fitz_wire::rpc::*;
use fitz_wire::{Capabilities, Dialect, Payload, Uuid};
use serde_json::{Value, json};

use crate::Dir;
use crate::util::*;

fn uuid(f: &Fields) -> R<Uuid> {
    let b = get_bytes(f, &["correlation_id"])?;
    <[u8; 16]>::try_from(b.as_slice()).map(Uuid).map_err(|_| format!("correlation_id of {} bytes", b.len()))
}

fn u8_of(f: &Fields, names: &[&str]) -> R<u8> {
    u8::try_from(get_u64(f, names)?).map_err(|e| e.to_string())
}

/// The current dialect refuses what the session's capabilities do not allow.
fn gate(ctx: &Ctx<'_>, required: Capabilities) -> R<()> {
    if ctx.dialect == Dialect::Current {
        ctx.capabilities.require(required).map_err(|e| format!("refused: {e}"))?;
    }
    Ok(())
}

/// Whether the session negotiated the RPC extensions.
fn negotiated(ctx: &Ctx<'_>) -> bool {
    ctx.dialect == Dialect::Current && ctx.capabilities.contains(Capabilities::RPC_CANCELLATION)
}

fn worker_extension(f: &Fields) -> R<Option<WorkerExtension>> {
    match f.get("extension") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(e)) => {
            let (version, flags) = (u8_of(e, &["version"])?, u8_of(e, &["flags"])?);
            if (version, flags) != (WorkerExtension::VERSION, WorkerExtension::FLAGS) {
                return Err(format!("refused: worker extension version {version} flags {flags}"));
            }
            Ok(Some(WorkerExtension))
        }
        Some(v) => Err(format!("extension is not an object: {v}")),
    }
}

fn budget_extension(f: &Fields) -> R<Option<BudgetExtension>> {
    match f.get("extension") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(e)) => {
            let (version, flags) = (u8_of(e, &["version"])?, u8_of(e, &["flags"])?);
            if (version, flags) != (BudgetExtension::VERSION, BudgetExtension::FLAGS) {
                return Err(format!("refused: budget extension version {version} flags {flags}"));
            }
            let ms = get_u32(e, &["remaining_budget_ms"])?;
            BudgetExtension::new(ms).map(Some).map_err(|e| format!("refused: {e}"))
        }
        Some(v) => Err(format!("extension is not an object: {v}")),
    }
}

fn worker_extension_json(e: Option<WorkerExtension>) -> Value {
    e.map_or(Value::Null, |_| json!({"version": WorkerExtension::VERSION, "flags": WorkerExtension::FLAGS}))
}

fn budget_json(b: Option<BudgetExtension>) -> Value {
    b.map_or(Value::Null, |b| {
        json!({
            "version": BudgetExtension::VERSION,
            "flags": BudgetExtension::FLAGS,
            "remaining_budget_ms": b.remaining_budget_ms(),
        })
    })
}

fn cancel_reason(v: u8) -> R<CancelReason> {
    CancelReason::from_u8(v).ok_or_else(|| format!("unknown cancel reason {v}"))
}

fn status_name(s: CancelStatus) -> &'static str {
    match s {
        CancelStatus::QueuedRemoved => "queued_removed",
        CancelStatus::Forwarded => "forwarded",
        CancelStatus::WorkerUnsupported => "worker_unsupported",
        CancelStatus::AlreadyTerminal => "already_terminal",
        CancelStatus::UnknownOrUnauthorized => "unknown_or_unauthorized",
        CancelStatus::ForwardingFailed => "forwarding_failed",
    }
}

pub fn encode(name: &str, f: &Fields, ctx: &Ctx<'_>) -> Option<R<Vec<u8>>> {
    let run = || -> R<Vec<u8>> {
        match name {
            "RPC_SUBSCRIBE_WORKER" => {
                let msg = SubscribeWorker {
                    pattern: get_str(f, &["pattern", "route"])?,
                    max_concurrent: get_u32(f, &["max_concurrent", "max_concurrency"])?,
                    extension: worker_extension(f)?,
                };
                gate(ctx, msg.required_capabilities())?;
                record(&msg)
            }
            "RPC_UNSUBSCRIBE_WORKER" => record(&UnsubscribeWorker { pattern: get_str(f, &["pattern", "route"])? }),
            "RPC_REQUEST" => {
                let msg = Request {
                    correlation_id: uuid(f)?,
                    route: get_str(f, &["route"])?,
                    body: &get_bytes(f, &["body"])?,
                    budget: budget_extension(f)?,
                };
                gate(ctx, msg.required_capabilities())?;
                record(&msg)
            }
            "RPC_RESPONSE" => {
                let (correlation_id, sequence) = (uuid(f)?, get_u64(f, &["sequence"])?);
                let end = get_bool(f, &["stream_end", "end"])?;
                if f.contains_key("error_code") {
                    let code = get_u32(f, &["error_code"])?;
                    let error = TerminalError::new(code, get_str(f, &["error_message"])?)
                        .map_err(|e| format!("refused: {e}"))?;
                    if !end {
                        return Err("refused: a terminal error is always the last chunk".into());
                    }
                    return record(&error.response(correlation_id, sequence));
                }
                let body = get_bytes(f, &["body"])?;
                let msg = if end {
                    Response::last(correlation_id, sequence, &body)
                } else {
                    Response::chunk(correlation_id, sequence, &body)
                };
                record(&msg)
            }
            "RPC_CANCEL" => {
                let id = uuid(f)?;
                let msg = match u8_of(f, &["kind"])? {
                    RpcCancel::KIND_CALLER => {
                        RpcCancel::Caller { correlation_id: id, reason: cancel_reason(u8_of(f, &["reason"])?)? }
                    }
                    RpcCancel::KIND_WORKER_RELEASED => RpcCancel::WorkerReleased { invocation_id: id },
                    k => return Err(format!("refused: unknown cancel kind {k}")),
                };
                // RPC_CANCEL exists only in the current dialect, behind the capability.
                ctx.capabilities.require(msg.required_capabilities()).map_err(|e| format!("refused: {e}"))?;
                record(&msg)
            }
            _ => Err(format!("no RPC encoder for {name}")),
        }
    };
    // `RPC_RESPONSE` is a message; `RPC_*_RESPONSE` are replies (decoded only).
    let reply = name.ends_with("_RESPONSE") && name != "RPC_RESPONSE";
    if !name.starts_with("RPC_") || reply || name == "RPC_LIFECYCLE" {
        return None;
    }
    Some(run())
}

/// Checks the routing state a push needs (`pending_call`, `registered_workers`).
fn check_context(ctx: &Ctx<'_>, id: Uuid, route: Option<&str>) -> R<()> {
    let pending = match ctx.get("pending_call") {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Object(o)) => o.get("correlation_id").and_then(Value::as_str),
        _ => None,
    };
    if let Some(p) = pending
        && p != to_hex(&id.0)
    {
        return Err(format!("frame for {} but the pending call is {p}", to_hex(&id.0)));
    }
    if let (Some(route), Some(Value::Array(patterns))) = (route, ctx.get("registered_workers"))
        && !patterns.iter().filter_map(Value::as_str).any(|p| fitz_wire::route::matches(p, route))
    {
        return Err(format!("route {route} matches no registered worker"));
    }
    Ok(())
}

fn request_fields(m: &Request<'_>, o: Out) -> Out {
    o.bytes("correlation_id", &m.correlation_id.0)
        .set("route", m.route)
        .bytes("body", m.body)
        .set("extension", budget_json(m.budget))
}

fn response_fields(m: &Response<'_>) -> Fields {
    let mut o = Out::new()
        .bytes("correlation_id", &m.correlation_id.0)
        .set("sequence", m.sequence)
        .alias(&["stream_end", "end"], m.stream_end())
        .bytes("body", m.body);
    if let Some(e) = m.terminal_error() {
        o = o.set("error_code", e.code.map_or(Value::Null, Value::from)).set("error_message", e.message);
    }
    o.done()
}

/// The data of a registration reply is always empty; a bare `00` decodes to
/// the same (empty) value.
fn registration_ok(_: &RegistrationOk, o: Out) -> Out {
    o.set("data", "")
}

pub fn decode(name: &str, dir: Dir, p: &[u8], ctx: &Ctx<'_>) -> Option<R<Decoded>> {
    let e = |e: fitz_wire::DecodeError| e.to_string();
    Some(match (name, dir) {
        ("RPC_SUBSCRIBE_WORKER", Dir::C2s) => message(SubscribeWorker::decode_with(p, negotiated(ctx)), |m, o| {
            o.alias(&["pattern", "route"], m.pattern)
                .alias(&["max_concurrent", "max_concurrency"], m.max_concurrent)
                .set("extension", worker_extension_json(m.extension))
        }),
        ("RPC_UNSUBSCRIBE_WORKER", Dir::C2s) => {
            message(UnsubscribeWorker::decode(p), |m, o| o.alias(&["pattern", "route"], m.pattern))
        }
        // The broker's view of a caller's request.
        ("RPC_REQUEST", Dir::C2s) => message(Request::decode_with(p, negotiated(ctx)), request_fields),
        // The worker's view: a request, unless it is the legacy ingress error.
        ("RPC_REQUEST", Dir::S2c) => {
            Inbound::classify(p, negotiated(ctx)).map_err(e).and_then(|inbound| match inbound {
                Inbound::Request(m) => {
                    check_context(ctx, m.correlation_id, Some(m.route))?;
                    decoded(request_fields(&m, Out::new()).done(), &inbound)
                }
                Inbound::IngressError(err) => {
                    Err(format!("legacy ingress error {} {:?}, not a request", err.code, err.message))
                }
            })
        }
        ("RPC_RESPONSE", _) => Response::decode(p).map_err(e).and_then(|m| {
            if dir == Dir::S2c {
                check_context(ctx, m.correlation_id, None)?;
            }
            decoded(response_fields(&m), &m)
        }),
        ("RPC_CANCEL", Dir::C2s) => message(RpcCancel::decode(p), |m, o| {
            let o = o.set("kind", m.kind()).bytes("correlation_id", &m.id().0);
            match m {
                RpcCancel::Caller { reason, .. } => o.set("reason", reason.to_u8()),
                RpcCancel::WorkerReleased { .. } => o,
            }
        }),
        ("RPC_LIFECYCLE", Dir::S2c) => message(RpcLifecycle::decode(p), |m, o| {
            let o = o.set("kind", m.kind()).bytes("correlation_id", &m.id().0);
            match *m {
                RpcLifecycle::Signal { reason, .. } => o.set("reason", reason.to_u8()),
                RpcLifecycle::CancelResult { status, .. } => {
                    o.set("status", status.to_u8()).set("outcome", status_name(status))
                }
            }
        }),
        ("RPC_SUBSCRIBE_WORKER_RESPONSE", Dir::S2c) => reply(decode_subscribe_worker_reply(p), ctx, registration_ok),
        ("RPC_UNSUBSCRIBE_WORKER_RESPONSE", Dir::S2c) => {
            reply(decode_unsubscribe_worker_reply(p), ctx, registration_ok)
        }
        _ => return None,
    })
}
