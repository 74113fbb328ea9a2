//! A headless Chromium driven over the DevTools protocol (a WebSocket), just
//! enough for the dashboard tests: open a URL, wait for the page to load, read
//! the rendered DOM, run a line of script (fill a field, click a button), take
//! a screenshot. The browser keeps its own cookies, so logins and the
//! `SameSite=Strict` session behave as they do for a person.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Whether Chromium is installed; required when `LETHE_TEST_CHROMIUM` is set
/// (`.ci/run` sets it and installs Debian's `chromium`).
pub fn available() -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("LETHE_TEST_CHROMIUM").is_none(),
            "LETHE_TEST_CHROMIUM is set but `chromium` is not installed (apt-get install -y chromium)"
        );
        eprintln!("note: chromium not installed; the browser part of this test is skipped");
    }
    found
}

/// One browser with one tab.
pub struct Browser {
    child: tokio::process::Child,
    ws: Ws,
    session: String,
    next_id: u64,
    /// Events read while waiting for a command's answer.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start Chromium headless with a fresh profile and open a blank tab.
    pub async fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=1280,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(u) = l.split("DevTools listening on ").nth(1) {
                    return u.trim().to_string();
                }
            }
            panic!("chromium exited without a DevTools address");
        })
        .await
        .expect("chromium printed its DevTools address within 60s");
        // Keep draining stderr so chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect to DevTools");
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            events: vec![],
            _profile: profile,
        };
        let t = b
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target = t["targetId"].as_str().unwrap().to_string();
        let a = b
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await;
        b.session = a["sessionId"].as_str().unwrap().to_string();
        b.page("Page.enable", json!({})).await;
        b
    }

    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string()))
            .await
            .expect("send to DevTools");
        let (ws, events) = (&mut self.ws, &mut self.events);
        let read = async {
            loop {
                let m = ws
                    .next()
                    .await
                    .expect("DevTools closed")
                    .expect("read DevTools");
                if let Message::Text(t) = m {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["id"] == id {
                        return v;
                    }
                    if v.get("method").is_some() {
                        events.push(v);
                    }
                }
            }
        };
        let v = tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .unwrap_or_else(|_| panic!("DevTools did not answer {method} within 60s"));
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    async fn page(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.call(Some(&s), method, params).await
    }

    /// Wait for the tab's next `load` event (after a navigation or a form submit).
    async fn loaded(&mut self) {
        if let Some(i) = self
            .events
            .iter()
            .position(|v| v["method"] == "Page.loadEventFired")
        {
            self.events.drain(..=i);
            return;
        }
        self.events.clear();
        let wait = async {
            loop {
                let m = self
                    .ws
                    .next()
                    .await
                    .expect("DevTools closed")
                    .expect("read DevTools");
                if let Message::Text(t) = m {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["method"] == "Page.loadEventFired" {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("the page loaded within 60s");
    }

    /// Open `url` and wait until it (and any redirect) has loaded.
    pub async fn goto(&mut self, url: &str) {
        self.events.clear();
        self.page("Page.navigate", json!({"url": url})).await;
        self.loaded().await;
    }

    /// Evaluate `script` in the page; its value.
    pub async fn eval(&mut self, script: &str) -> Value {
        let r = self
            .page(
                "Runtime.evaluate",
                json!({"expression": script, "returnByValue": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{script}: {r}");
        r["result"]["value"].clone()
    }

    /// Run `script` that submits a form or clicks a button, and wait for the next page.
    pub async fn submit(&mut self, script: &str) {
        self.events.clear();
        self.eval(script).await;
        self.loaded().await;
    }

    /// The rendered DOM.
    pub async fn html(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The current URL.
    pub async fn url(&mut self) -> String {
        self.eval("location.href")
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A full-page PNG, written to `path`.
    pub async fn screenshot(&mut self, path: &std::path::Path) -> Vec<u8> {
        use base64::Engine as _;
        let r = self
            .page(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        std::fs::write(path, &png).unwrap();
        png
    }

    /// Close the browser.
    pub async fn close(mut self) {
        self.next_id += 1;
        let msg = json!({"id": self.next_id, "method": "Browser.close", "params": {}});
        let _ = self.ws.send(Message::Text(msg.to_string())).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}
