//! HTTP/1.1 client pieces of the load test: an [`Endpoint`] parsed from a URL, one keep-alive
//! [`Connection`] per caller (k6 keeps one per virtual user), and [`HostClient`], which the
//! checker, the stages and the setup use for summaries and admin calls.
//!
//! Durations are measured as k6 measures `http_req_duration`: from sending the request to the
//! last byte of the body, without the TCP connect.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

/// The HTTP client timeout of the official script: a request slower than this failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

/// Errors of one HTTP exchange.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL {0:?}: expected http://host:port")]
    BadUrl(String),
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    /// The kept-alive connection was gone before the request was written: safe to resend on a
    /// fresh one (as Go's and k6's clients do).
    #[error("connection closed before the request was sent: {0}")]
    NotSent(hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{method} {path}: status {status}: {body}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("{path}: unexpected JSON ({source}): {body}")]
    Json {
        path: String,
        source: serde_json::Error,
        body: String,
    },
}

/// Where an HTTP service listens (`http://host:port`; a path after the port is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `http://host:port` (or `host:port`).
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let authority = rest.split('/').next().ok_or_else(bad)?;
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Endpoint {
            host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port,
        })
    }

    /// `host:port`, as the `Host` header wants it.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
    }
}

/// What one exchange returned.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// Send to last body byte.
    pub elapsed: Duration,
}

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Connection {
    /// Opens a TCP connection (no Nagle) and runs its HTTP/1.1 state machine on a task.
    pub async fn open(endpoint: &Endpoint) -> Result<Self, ClientError> {
        let addr = endpoint.authority();
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        // Latency is what we measure: never let Nagle hold back a small request.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the peer closes; both are normal.
            let _ = conn.await;
        });
        Ok(Connection {
            sender,
            authority: addr,
        })
    }

    /// True when the peer closed the connection (a fresh one is needed).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and reads the whole body.
    pub async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Answer, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.authority.as_str());
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body.unwrap_or_default()))?;
        self.sender.ready().await.map_err(ClientError::NotSent)?;
        let started = Instant::now();
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            body,
            elapsed: started.elapsed(),
        })
    }
}

/// A lazily (re)connected keep-alive client of one host, for the low-rate calls (summaries,
/// admin). Every call is bounded by [`REQUEST_TIMEOUT`]; a failed call drops the connection.
pub struct HostClient {
    pub endpoint: Endpoint,
    conn: Option<Connection>,
    timeout: Duration,
}

impl HostClient {
    pub fn new(endpoint: Endpoint) -> Self {
        HostClient {
            endpoint,
            conn: None,
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// Uses another timeout (the drain reads may scan big stores).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One call; any status is returned as an [`Answer`].
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Answer, ClientError> {
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, async {
            let reused = matches!(&self.conn, Some(c) if !c.is_closed());
            let conn = match self.conn.take() {
                Some(conn) if !conn.is_closed() => self.conn.insert(conn),
                _ => self.conn.insert(Connection::open(&self.endpoint).await?),
            };
            match conn
                .exchange(method.clone(), path, headers, body.clone())
                .await
            {
                Err(ClientError::NotSent(_)) if reused => {
                    let conn = self.conn.insert(Connection::open(&self.endpoint).await?);
                    conn.exchange(method, path, headers, body).await
                }
                other => other,
            }
        })
        .await
        .unwrap_or(Err(ClientError::Timeout(timeout)));
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// A call that must answer 2xx with a JSON body of type `T`.
    pub async fn get_json<T: DeserializeOwned>(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(T, Duration), ClientError> {
        let answer = self.call(Method::GET, path, headers, None).await?;
        let answer = ensure_success(Method::GET, path, answer)?;
        let value = serde_json::from_slice(&answer.body).map_err(|source| ClientError::Json {
            path: path.to_string(),
            source,
            body: String::from_utf8_lossy(&answer.body).into_owned(),
        })?;
        Ok((value, answer.elapsed))
    }
}

/// Turns a non-2xx answer into [`ClientError::Status`].
pub fn ensure_success(method: Method, path: &str, answer: Answer) -> Result<Answer, ClientError> {
    if answer.status.is_success() {
        Ok(answer)
    } else {
        Err(ClientError::Status {
            method,
            path: path.to_string(),
            status: answer.status,
            body: String::from_utf8_lossy(&answer.body)
                .chars()
                .take(200)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("http://127.0.0.1:9999").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 9999));
        let e = Endpoint::parse("localhost:8001/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("localhost", 8001));
        assert!(Endpoint::parse("http://nohost").is_err());
        assert!(Endpoint::parse("http://:80").is_err());
        assert!(Endpoint::parse("http://h:notaport").is_err());
    }
}
