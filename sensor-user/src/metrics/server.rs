//! The `/metrics` endpoint: HTTP/1.1 with hyper, one task per connection, no TLS (it
//! listens on loopback by default; put a proxy with TLS and authentication in front to
//! expose it further).

#[cfg(test)]
mod tests;

use std::{convert::Infallible, future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::Semaphore};

use super::{Metrics, MetricsError};

/// The OpenMetrics text format, which `Metrics::render` writes and Prometheus (2.5 and
/// later) asks for first.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections served at once. A scraper uses one; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;

/// A client must send its request head within this, or the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connections still open at shutdown may take to finish their response.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// After an accept error that means "out of descriptors or memory", wait this long before
/// accepting again rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds the metrics listener. Call it before anything slow at start, so that an address
/// in use is reported at once.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::bind(addr, source))
}

/// Serves `GET /metrics` (and 404 for anything else) on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MetricsError> {
    let listener = bind(addr).await?;
    serve_listener(listener, metrics, shutdown).await
}

/// As [`serve`], on a listener already bound (tests bind `127.0.0.1:0`). When `shutdown`
/// completes it stops accepting, lets open connections finish their response (at most
/// two seconds), and returns.
pub async fn serve_listener(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MetricsError> {
    let addr = listener.local_addr().map_err(MetricsError::Listener)?;
    tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);

    let result = loop {
        let slot = tokio::select! {
            () = &mut shutdown => break Ok(()),
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => break Ok(()),
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => match accept_error(&e) {
                    AcceptError::Retry => continue,
                    AcceptError::Backoff => {
                        tracing::warn!(error = %e, "metrics listener cannot accept a connection now");
                        tokio::select! {
                            () = &mut shutdown => break Ok(()),
                            () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        }
                    }
                    AcceptError::Fatal => break Err(MetricsError::Accept { addr, source: e }),
                },
            },
        };
        let metrics = Arc::clone(&metrics);
        let service = service_fn(move |request| {
            let response = respond(&metrics, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
            drop(slot);
        });
    };

    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("metrics connections still open at shutdown were dropped");
    }
    result
}

enum AcceptError {
    /// The connection went away before it was accepted: accept the next one.
    Retry,
    /// Out of file descriptors or memory: wait, then accept again.
    Backoff,
    /// The listener itself is broken.
    Fatal,
}

fn accept_error(e: &io::Error) -> AcceptError {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => AcceptError::Retry,
        _ => match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                AcceptError::Backoff
            }
            // Errors of the new connection that accept(2) passes on (Linux, accept(2)).
            Some(
                libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ETIMEDOUT
                | libc::EPERM,
            ) => AcceptError::Retry,
            _ => AcceptError::Fatal,
        },
    }
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    match *request.method() {
        Method::GET | Method::HEAD => {
            let body = if request.method() == Method::HEAD {
                Bytes::new()
            } else {
                Bytes::from(metrics.render())
            };
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, CONTENT_TYPE)
                .header(header::CACHE_CONTROL, "no-store")
                .body(Full::new(body))
                .unwrap_or_else(|_| fallback_response("metrics"))
        }
        _ => {
            let mut response = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use GET\n",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .unwrap_or_else(|_| fallback_response("plain"))
}

/// `Response::builder` fails only on an invalid header name or value; ours are constants.
fn fallback_response(what: &str) -> Response<Full<Bytes>> {
    tracing::error!(what, "cannot build a metrics response");
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
