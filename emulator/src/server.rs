//! The accept loop: one hyper HTTP/1.1 connection task per accepted socket (keep-alive and
//! pipelining on, Nagle off), until the shutdown future resolves.

use std::future::Future;
use std::os::fd::AsFd;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::routes::{self, Connection};
use super::state::Shared;

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
    let socket = if shared.chaos.resets() {
        stream.as_fd().try_clone_to_owned().ok()
    } else {
        None
    };
    let connection = Arc::new(Connection { socket });
    let service =
        service_fn(move |request| routes::handle(shared.clone(), connection.clone(), request));
    let served = http1::Builder::new()
        .keep_alive(true)
        .pipeline_flush(true)
        // Idle keep-alive connections from a backend's pool must stay open.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = served {
        tracing::debug!("processor: connection ended: {err}");
    }
}
