//! The HTTP server under the API: hyper's HTTP/1 connections with a header-read timeout (that
//! also closes idle keep-alive connections), a connection limit, and a shutdown with a
//! deadline.
//!
//! `axum::serve` has none of these knobs: a client sending a header line every few seconds
//! held its connection forever, and enough idle connections exhausted the descriptors (and
//! with them `/healthz`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::telemetry::LogLimiter;

/// The limits on incoming connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must have arrived this long after the server started waiting for
    /// them; also how long a keep-alive connection may stay idle between requests.
    pub header_timeout: Duration,
    /// Connections open at once. A new connection beyond it closes the oldest one (when that
    /// one is between requests, at once; else after its request).
    pub max_connections: usize,
    /// On shutdown, how long requests in flight may take before their connections are
    /// closed.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Largest request head (request line and headers), and read buffer per connection.
const MAX_HEAD: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` resolves; then closes idle connections at once
/// and busy ones after at most `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD);
    let builder = Arc::new(builder);
    let open: Arc<Mutex<BTreeMap<u64, Arc<Notify>>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let accept_errors = LogLimiter::per_second();
    let evictions = LogLimiter::new(Duration::from_secs(10));
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished connection tasks as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: wait a little instead of spinning.
                    if let Some(suppressed) = accept_errors.admit("accept") {
                        warn!(error = %e, suppressed, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let id = next_id;
        next_id += 1;
        let close = Arc::new(Notify::new());
        {
            let mut open = open.lock().expect("connection table lock");
            while open.len() >= limits.max_connections.max(1) {
                let Some((_, oldest)) = open.pop_first() else {
                    break;
                };
                oldest.notify_one();
                if let Some(suppressed) = evictions.admit("limit") {
                    warn!(
                        limit = limits.max_connections,
                        suppressed, "connection limit reached: closing the oldest connection"
                    );
                }
            }
            open.insert(id, close.clone());
        }
        let builder = builder.clone();
        let framing = Arc::new(AtomicBool::new(false));
        let stream = FirstHead::new(stream, framing.clone());
        let service = {
            let inner = TowerToHyperService::new(app.clone());
            hyper::service::service_fn(move |request| {
                let refused = framing.load(Ordering::Acquire);
                let inner = inner.clone();
                async move {
                    if refused {
                        return Ok(ambiguous_framing());
                    }
                    hyper::service::Service::call(&inner, request).await
                }
            })
        };
        let mut stop_rx = stop_rx.clone();
        let open = open.clone();
        let grace = limits.shutdown_grace;
        connections.spawn(async move {
            let _ = stream.inner.set_nodelay(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = close.notified() => {
                    // Between requests: closed at once. A request in flight (or a head being
                    // sent) gets the shutdown grace, so evicted connections cannot pile up.
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(grace, connection.as_mut()).await {
                        Ok(result) => result,
                        Err(_) => Ok(()),
                    }
                }
                _ = async { let _ = stop_rx.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            if let Err(e) = result {
                // Timeouts and clients that went away; nothing the operator can act on.
                debug!(error = %e, "connection ended with an error");
            }
            open.lock().expect("connection table lock").remove(&id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let finished = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !finished {
        info!(
            grace = ?limits.shutdown_grace,
            open = connections.len(),
            "closing connections whose requests did not finish in time"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// The HTTP API's options shared by `serve` and `controller`.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// A file holding the event token every event endpoint asks for (`None`: open intake).
    pub event_token_file: Option<std::path::PathBuf>,
    pub limits: HttpLimits,
    /// How long an event body may take to arrive once its headers have.
    pub body_timeout: Option<Duration>,
}

impl HttpOptions {
    /// Reads the event token, if one is configured.
    pub fn event_token(&self) -> crate::Result<Option<Arc<crate::intake::EventToken>>> {
        match &self.event_token_file {
            None => Ok(None),
            Some(path) => crate::intake::EventToken::from_file(path)
                .map(|token| Some(Arc::new(token)))
                .map_err(crate::Error::EventToken),
        }
    }

    pub fn body_timeout(&self) -> Duration {
        self.body_timeout
            .unwrap_or(crate::api::DEFAULT_BODY_TIMEOUT)
    }
}

/// The answer to a request with both `Content-Length` and `Transfer-Encoding` (hyper lets the
/// latter win; Herald refuses it, as RFC 9112 allows, since a proxy in front may have read the
/// body the other way).
fn ambiguous_framing() -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (
        axum::http::StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({
            "error": "a request may not have both Content-Length and Transfer-Encoding"
        })),
    )
        .into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// A connection that looks at the header names of its first request: hyper drops
/// `Content-Length` when `Transfer-Encoding` is present, so the handler could not tell. Later
/// requests on a kept-alive connection are not inspected; for them hyper's handling stands
/// (`Transfer-Encoding` wins and the connection is closed after the answer).
struct FirstHead {
    inner: TcpStream,
    /// The first head's bytes so far; `None` once it is complete (or too long to be one).
    head: Option<Vec<u8>>,
    ambiguous: Arc<AtomicBool>,
}

impl FirstHead {
    fn new(inner: TcpStream, ambiguous: Arc<AtomicBool>) -> Self {
        FirstHead {
            inner,
            head: Some(Vec::new()),
            ambiguous,
        }
    }

    fn inspect(&mut self, read: &[u8]) {
        let Some(head) = &mut self.head else { return };
        head.extend_from_slice(read);
        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
            if head.len() > MAX_HEAD {
                self.head = None;
            }
            return;
        };
        let names = head[..end]
            .split(|&b| b == b'\n')
            .skip(1)
            .filter_map(|line| line.split(|&b| b == b':').next())
            .map(|name| name.trim_ascii().to_ascii_lowercase());
        let (mut length, mut encoding) = (false, false);
        for name in names {
            length |= name == b"content-length";
            encoding |= name == b"transfer-encoding";
        }
        if length && encoding {
            self.ambiguous.store(true, Ordering::Release);
        }
        self.head = None;
    }
}

impl AsyncRead for FirstHead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.head.is_some() {
            let read = buf.filled()[before..].to_vec();
            this.inspect(&read);
        }
        result
    }
}

impl AsyncWrite for FirstHead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
