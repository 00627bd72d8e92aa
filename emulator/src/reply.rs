//! The responses every handler builds (JSON, `{"message":...}`, empty) and the bounded body
//! read; the payment routes and the admin endpoints both use them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

/// The largest request body read; a payment is ~120 bytes.
const MAX_BODY: usize = 64 * 1024;

/// The response type of every handler.
pub type HttpResponse = Response<Full<Bytes>>;

/// The whole body, or `None` when it cannot be read or is too large.
pub async fn read_body(request: Request<Incoming>) -> Option<Bytes> {
    Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .ok()
        .map(|collected| collected.to_bytes())
}

/// A JSON response.
pub fn json(status: StatusCode, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// `{"message":"..."}` (the official processor's shape).
pub fn message(status: StatusCode, text: impl AsRef<str>) -> HttpResponse {
    let text = serde_json::to_string(text.as_ref()).unwrap_or_else(|_| String::from("\"\""));
    json(status, format!(r#"{{"message":{text}}}"#))
}

/// A response without a body.
pub fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
