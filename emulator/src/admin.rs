//! The admin endpoints, all behind `X-Rinha-Token`: the payments summary, the token, delay
//! and failure settings, and the purge.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::body::JsonObject;
use super::money::Cents;
use super::reply::{empty, json, message, read_body, HttpResponse};
use super::state::Shared;
use super::timestamp;

/// The header that carries the admin token.
pub const TOKEN_HEADER: &str = "x-rinha-token";

fn authorized<B>(shared: &Shared, request: &Request<B>) -> bool {
    request
        .headers()
        .get(TOKEN_HEADER)
        .is_some_and(|value| shared.token_matches(value.as_bytes()))
}

/// `GET /admin/payments-summary?from&to`.
pub fn summary<B>(shared: &Shared, request: &Request<B>) -> HttpResponse {
    if !authorized(shared, request) {
        return empty(StatusCode::UNAUTHORIZED);
    }
    let (from, to) = match window(request.uri().query().unwrap_or("")) {
        Ok(window) => window,
        Err(reason) => return message(StatusCode::BAD_REQUEST, reason),
    };
    let summary = shared.store().summary(from, to, shared.fee);
    json(
        StatusCode::OK,
        format!(
            r#"{{"totalRequests":{},"totalAmount":{},"totalFee":{},"feePerTransaction":{}}}"#,
            summary.total_requests,
            Cents(summary.total_cents),
            Cents(summary.total_fee_cents),
            summary.fee
        ),
    )
}

/// Reads `from` and `to` (microseconds) from a query string; empty values count as absent.
pub fn window(query: &str) -> Result<(Option<i64>, Option<i64>), String> {
    let mut from = None;
    let mut to = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = if key.eq_ignore_ascii_case("from") {
            &mut from
        } else if key.eq_ignore_ascii_case("to") {
            &mut to
        } else {
            continue;
        };
        let value = percent_decode(value).ok_or_else(|| format!("{key}: bad escape"))?;
        // An unescaped '+' in an offset (`+00:00`) arrives as a space: put it back.
        let value = value.trim().replace(' ', "+");
        if value.is_empty() {
            continue;
        }
        *slot = Some(timestamp::parse_micros(&value).map_err(|e| format!("{key}: {e}"))?);
    }
    Ok((from, to))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `PUT /admin/configurations/{token,delay,failure,answer}` (`answer`: the emulator's own, a
/// status every payment gets, 0 to clear).
pub async fn configure(shared: &Shared, request: Request<Incoming>) -> HttpResponse {
    if !authorized(shared, &request) {
        return empty(StatusCode::UNAUTHORIZED);
    }
    let setting = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let Some(body) = read_body(request).await else {
        return message(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let object = match JsonObject::parse(&body) {
        Ok(object) => object,
        Err(err) => return message(StatusCode::BAD_REQUEST, err.to_string()),
    };
    match setting.as_str() {
        "token" => match object.string("token") {
            Ok(token) => {
                shared.set_token(token);
                empty(StatusCode::NO_CONTENT)
            }
            Err(err) => message(StatusCode::BAD_REQUEST, err.to_string()),
        },
        "delay" => {
            let delay = object
                .number_text("delay")
                .ok()
                .and_then(|text| text.parse::<u64>().ok());
            match delay {
                Some(delay) => {
                    let was = shared.set_delay_ms(delay);
                    changed("delay", was, delay)
                }
                None => message(StatusCode::BAD_REQUEST, "delay must be whole milliseconds"),
            }
        }
        "answer" => {
            let status = object
                .number_text("answer")
                .ok()
                .and_then(|text| text.parse::<u16>().ok())
                .filter(|s| *s == 0 || (200..600).contains(s));
            match status {
                Some(status) => {
                    let was = shared.switches.set_answer((status != 0).then_some(status));
                    changed("answer", was.unwrap_or(0), status)
                }
                None => message(StatusCode::BAD_REQUEST, "answer must be 0 or a status"),
            }
        }
        _ => match object.boolean("failure") {
            Ok(failure) => {
                let was = shared.set_failing(failure);
                changed("failure", was, failure)
            }
            Err(err) => message(StatusCode::BAD_REQUEST, err.to_string()),
        },
    }
}

fn changed(config: &str, was: impl std::fmt::Display, is: impl std::fmt::Display) -> HttpResponse {
    json(
        StatusCode::OK,
        format!(r#"{{"config":"{config}","was":{was},"is":{is}}}"#),
    )
}

/// `POST /admin/purge-payments`.
pub fn purge<B>(shared: &Shared, request: &Request<B>) -> HttpResponse {
    if !authorized(shared, request) {
        return empty(StatusCode::UNAUTHORIZED);
    }
    shared.store().purge();
    message(StatusCode::OK, "All payments purged.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_window_from_the_query() {
        assert_eq!(window(""), Ok((None, None)));
        assert_eq!(
            window("from=1970-01-01T00:00:01.000Z&to=1970-01-01T00:00:02Z"),
            Ok((Some(1_000_000), Some(2_000_000)))
        );
        assert_eq!(
            window("from=1970-01-01T00%3A00%3A01%2B00%3A00&to="),
            Ok((Some(1_000_000), None))
        );
        assert_eq!(
            window("FROM=1970-01-01T00:00:01+00:00&x=y"),
            Ok((Some(1_000_000), None))
        );
        assert!(window("from=soon").is_err());
        assert!(window("to=%zz").is_err());
    }
}
