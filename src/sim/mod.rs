//! Simulated processors for the demo and the benchmark: small HTTP servers on
//! 127.0.0.1 that answer like the real APIs (same paths, methods, status codes
//! and bodies as in PROCESSORS.md), holding their data in memory.
//!
//! Tests do not use these: they use wiremock fakes with exact expectations, so
//! that a simulator bug cannot hide an engine bug.

pub mod mailchimp;

use std::net::SocketAddr;
use tokio::net::TcpListener;

/// A running simulator.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Stops it when dropped.
    _task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serve a router on an ephemeral loopback port.
pub async fn serve(router: axum::Router) -> std::io::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(Running { addr, _task: task })
}
