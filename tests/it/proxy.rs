//! A TCP proxy for tests and benchmarks: it sits between the daemons and
//! PostgreSQL, delays every chunk by a set one-way delay (so the work is
//! round-trip-bound, as over a real network), and can cut every connection
//! and refuse new ones for a while (a failover, a restart) without touching
//! the database server, which other tests share.
//!
//! Shared with `benches/` through `#[path]`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct State {
    upstream: SocketAddr,
    delay: Duration,
    down: AtomicBool,
    /// Cancelled to drop every open connection; replaced after each cut.
    conns: Mutex<CancellationToken>,
    accepted: AtomicU64,
}

/// A running proxy; dropping it stops accepting (open connections end with their peers).
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(t) = self.state.conns.lock() {
            t.cancel();
        }
    }
}

impl Proxy {
    /// Listen on 127.0.0.1 (a free port) and forward to `upstream`, each
    /// direction delayed by `delay`.
    pub async fn start(upstream: SocketAddr, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State {
            upstream,
            delay,
            down: AtomicBool::new(false),
            conns: Mutex::new(CancellationToken::new()),
            accepted: AtomicU64::new(0),
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if st.down.load(Ordering::SeqCst) {
                    // Refused: closed at once (as a server that is restarting).
                    drop(client);
                    continue;
                }
                st.accepted.fetch_add(1, Ordering::Relaxed);
                let token = st.conns.lock().expect("proxy lock").clone();
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(st.upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = pipe(cr, sw, st.delay) => {}
                        _ = pipe(sr, cw, st.delay) => {}
                    }
                });
            }
        });
        Proxy { addr, state, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Rewrite a `postgres://host:port/...` URL to go through this proxy.
    pub fn url(&self, url: &str) -> String {
        let rest = url
            .split_once("://")
            .map(|(_, r)| r)
            .expect("a URL with a scheme");
        let (auth_host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = auth_host.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "postgres://{}{}/{}",
            user.unwrap_or_default(),
            self.addr,
            path
        )
    }

    /// Connections accepted (not refused) so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// The outage: drop every open connection and refuse new ones.
    pub fn cut(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        let mut t = self.state.conns.lock().expect("proxy lock");
        t.cancel();
        *t = CancellationToken::new();
    }

    /// End the outage: accept connections again.
    pub fn restore(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }
}

/// Copy `from` to `to`, each chunk delivered `delay` after it was read (in order).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    if delay.is_zero() {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
