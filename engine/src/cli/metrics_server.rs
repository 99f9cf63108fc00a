//! `--metrics-addr`: a Prometheus `/metrics` endpoint (HTTP/1, hyper) that
//! serves the run's latest sample ([`PromMetrics`]) while the job runs.
//!
//! It listens on a loopback address only (the flag refuses others: there
//! is no authentication), on the runtime of the run; dropping the
//! [`MetricsServer`] aborts the accept loop and every open connection, so
//! the endpoint goes away with the job. `GET /metrics` answers the text
//! format; every other path is a 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::{JoinHandle, JoinSet};

use super::CliError;
use crate::events::PromMetrics;

/// Prometheus' text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running endpoint; dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` (port 0: a free port, see [`MetricsServer::addr`]) and
    /// serves `metrics` on the current tokio runtime.
    pub fn start(addr: SocketAddr, metrics: Arc<PromMetrics>) -> Result<Self, CliError> {
        let bind_err = |e: std::io::Error| {
            CliError::runtime(format!(
                "--metrics-addr {addr}: cannot listen: {e}; choose a free port (or port 0)"
            ))
        };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let task = tokio::spawn(accept_loop(listener, metrics));
        Ok(Self { addr, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, metrics: Arc<PromMetrics>) {
    // Dropped with the loop when the server is aborted: aborts every
    // connection still open.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let metrics = Arc::clone(&metrics);
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let metrics = Arc::clone(&metrics);
                        async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn respond<B>(req: &Request<B>, metrics: &PromMetrics) -> Response<String> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, metrics.render()),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; metrics are at /metrics\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ctype)
        .body(body)
        .unwrap_or_else(|_| Response::new(String::new()))
}
