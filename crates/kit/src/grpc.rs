//! gRPC plumbing shared by servers and clients: the caller's bearer token in metadata, channels
//! with timeouts, trace context propagation.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::Error;

pub const AUTHORIZATION: &str = "authorization";

/// The bearer token in a request's metadata, if any.
pub fn bearer_token<T>(req: &tonic::Request<T>) -> Option<&str> {
    req.metadata().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(crate::jwt::bearer)
}

/// Wraps `msg` in a request carrying the caller's token and the current trace context.
pub fn request<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token
        && let Ok(v) = MetadataValue::try_from(format!("Bearer {t}"))
    {
        req.metadata_mut().insert(AUTHORIZATION, v);
    }
    for (k, v) in crate::telemetry::current_trace_context() {
        if let (Ok(key), Ok(val)) =
            (tonic::metadata::MetadataKey::from_bytes(k.as_bytes()), MetadataValue::try_from(v.as_str()))
        {
            req.metadata_mut().insert(key, val);
        }
    }
    req
}

/// A lazily-connecting channel with connect and per-call timeouts, so a dead peer never hangs a
/// caller.
pub fn channel(url: &str) -> Result<Channel, Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::internal(format!("bad gRPC url {url}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}
