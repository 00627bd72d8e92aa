//! The accept loop: one hyper HTTP/1.1 connection task per accepted socket (keep-alive and
//! pipelining on, Nagle off), until the shutdown future resolves. A connection accepted while
//! [`super::chaos::Switches::set_close_idle`] is on is closed once idle that long, as a real
//! server's keep-alive timeout does.

use std::future::Future;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::routes::{self, Connection};
use super::state::{Shared, Traffic};

/// Serves `listener` until `shutdown` resolves; connections still open are dropped with the
/// runtime.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(connection(stream, shared.clone()));
                }
                Err(err) => {
                    // Usually EMFILE under overload: back off briefly instead of spinning.
                    tracing::warn!("processor: accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket only when a fault needs one (a reset, an interim
    // answer): the limiter's tests open 1,300 connections under the default descriptor limit.
    let socket = if shared.chaos.resets() || shared.switches.continue_first() {
        stream.as_fd().try_clone_to_owned().ok()
    } else {
        None
    };
    let close_idle = shared.switches.close_idle();
    let connection = Arc::new(Connection::new(socket));
    let service = {
        let (shared, connection) = (shared.clone(), connection.clone());
        service_fn(move |request| {
            let (shared, connection) = (shared.clone(), connection.clone());
            async move {
                let _active = connection.active();
                let mut response = routes::handle(shared, connection.clone(), request).await?;
                if let Some((idle, true)) = close_idle {
                    let secs = idle.as_secs_f64().ceil().max(1.0) as u64;
                    response.headers_mut().insert(
                        "keep-alive",
                        HeaderValue::from_str(&format!("timeout={secs}"))
                            .expect("a number is a header value"),
                    );
                }
                Ok::<_, routes::Abort>(response)
            }
        })
    };
    let served = http1::Builder::new()
        .keep_alive(true)
        .pipeline_flush(true)
        // Idle keep-alive connections from a backend's pool must stay open.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    let served = match close_idle {
        None => served.await,
        Some((idle, _)) => {
            tokio::pin!(served);
            let tick = (idle / 4).min(Duration::from_millis(50));
            loop {
                tokio::select! {
                    result = &mut served => break result,
                    () = tokio::time::sleep(tick) => {
                        if connection.idle_for().is_some_and(|for_| for_ >= idle) {
                            // Dropping the connection closes the socket (FIN), as a real
                            // server's keep-alive timeout does.
                            Traffic::count(&shared.traffic.idle_closed);
                            return;
                        }
                    }
                }
            }
        }
    };
    if let Err(err) = served {
        tracing::debug!("processor: connection ended: {err}");
    }
}
