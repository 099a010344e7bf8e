//! A real headless browser for the hub's HTML pages (DESIGN.md §3b): Debian's `chromium`, driven over
//! WebDriver by a private `chromedriver` (one per test, on a free loopback port) through `fantoccini`.
//! `make test` installs both (infra/scripts/test.sh). Screenshots go to
//! `target/test-artifacts/screenshots/<test>/NN-<name>.png`, so a failing page can be looked at.
//!
//! Observed with Chromium 156 on plain `http://127.0.0.1:PORT` and `http://localhost:PORT`: `Secure`
//! cookies, `__Host-`/`__Secure-` prefixes included, are stored and sent back (both hosts are potentially
//! trustworthy origins), whether set by a 303 after a form POST or by a 200.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// The flags of DESIGN.md §3b: no sandbox (tests run as root), nothing phoning home, a fixed viewport
/// so screenshots are comparable.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,800",
];

/// How long to wait for chromedriver to answer and for an element to appear (pages are rendered by the
/// server, so an element is there once the navigation is done; this only absorbs the click-to-load gap).
const WAIT: Duration = Duration::from_secs(10);

pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_port: u16,
    session: String,
    tmp: PathBuf,
    shots: PathBuf,
    shot_count: AtomicUsize,
    /// One browser at a time: Chromium is heavy for 2 cores shared with the other tests, and a
    /// starved renderer times out WebDriver commands.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

static ONE_AT_A_TIME: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(Default::default);

impl Browser {
    /// Starts chromedriver on a free port, waits until it is ready, and opens a fresh headless Chromium
    /// (a new temporary profile: no cookies from other tests). `test_name` names the screenshot folder.
    pub async fn start(test_name: &str) -> Self {
        let turn = ONE_AT_A_TIME.clone().lock_owned().await;
        let chromedriver = on_path("chromedriver");
        let chromium = on_path("chromium");
        let driver_port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
        // Chromium's profile and singleton directories go here, removed on drop (some outlive a quit).
        let tmp = std::env::temp_dir().join(format!("hub-browser-{driver_port}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromedriver.display()));
        let deadline = Instant::now() + WAIT;
        while !http(driver_port, "GET", "/status").is_some_and(|body| body.contains("\"ready\":true")) {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited ({status}) before answering on port {driver_port}");
            }
            if Instant::now() > deadline {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver did not answer on port {driver_port} within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": CHROMIUM_ARGS }));
        // chromedriver is plain HTTP on loopback: no TLS stack (and no CA certificates) needed.
        let client = match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
        {
            Ok(client) => client,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver could not start {}: {e}", chromium.display());
            }
        };
        let session = client.session_id().await.unwrap().expect("a WebDriver session id");

        let shots =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/screenshots").join(test_name);
        let _ = std::fs::remove_dir_all(&shots); // the previous run's pictures of this test
        std::fs::create_dir_all(&shots).unwrap();
        Self { client, driver, driver_port, session, tmp, shots, shot_count: AtomicUsize::new(0), _turn: turn }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!("no element {css:?} on {}: {e}", self.url().await),
        }
    }

    /// Replaces the value of the form field `css` with `value`, typed as a user would.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap_or_else(|e| panic!("clear {css:?}: {e}"));
        field.send_keys(value).await.unwrap_or_else(|e| panic!("type into {css:?}: {e}"));
    }

    /// Clicks `css` (e.g. a submit button); chromedriver waits for the navigation it starts.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    /// The rendered text of `css` (what a user sees: hidden elements give "").
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_else(|e| panic!("text of {css:?}: {e}"))
    }

    /// Waits (up to the usual wait) until the browser is on `path`: a click that posts a form and
    /// follows its redirects may return before the last page has loaded. Panics with the page's text.
    pub async fn wait_for_path(&self, path: &str) {
        let deadline = Instant::now() + WAIT;
        while self.url().await.path() != path {
            if Instant::now() > deadline {
                let text = self.client.source().await.unwrap_or_default();
                panic!("still on {} instead of {path}: {text}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to the usual wait) until `css` shows `expected`: after a form's POST the browser
    /// may still show the previous page, which has elements of the same kind.
    pub async fn wait_for_text(&self, css: &str, expected: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let shown = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if shown.contains(expected) {
                return;
            }
            if Instant::now() > deadline {
                panic!("{css} shows {shown:?}, not {expected:?}, on {}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.expect("current URL")
    }

    /// Saves the viewport as `NN-<name>.png` (numbered in the order taken) and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let n = self.shot_count.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self.shots.join(format!("{n:02}-{name}.png"));
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Navigates to a JSON `url` (a top-level GET: all the origin's cookies, `SameSite=Strict` ones too,
    /// whatever the current page's CSP) and parses the document's text. Leaves the browser on that URL.
    pub async fn open_json(&self, url: &str) -> Value {
        self.goto(url).await;
        let text = self.text("body").await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {text}"))
    }
}

impl Drop for Browser {
    /// Ends the session (chromedriver then quits Chromium: killing chromedriver alone leaves Chromium
    /// running), asks chromedriver to exit so it deletes the profile, and removes what is left. Blocking,
    /// because the test's runtime may already be gone (and this runs on panics too).
    fn drop(&mut self) {
        http(self.driver_port, "DELETE", &format!("/session/{}", self.session));
        http(self.driver_port, "GET", "/shutdown");
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.driver.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// The full path of `program` on PATH, or a panic saying how to get it.
fn on_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not on PATH: the browser tests need Debian's chromium and chromium-driver; \
                 run `make test`, which installs them"
            )
        })
}

/// A minimal blocking HTTP/1.1 request to chromedriver on loopback: the response body, if it answers.
/// (chromedriver keeps the connection open, so the body is read by its Content-Length.)
fn http(port: u16, method: &str, path: &str) -> Option<String> {
    let stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(&stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n").ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        match line.trim_end().split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("content-length") => length = value.trim().parse().ok()?,
            None if line.trim_end().is_empty() => break,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}
