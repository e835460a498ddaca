//! A real Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`). Without chromedriver the browser tests print a skip
//! and pass, except in CI (`CI` set), where a missing browser is a failure.

use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn find(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Starts chromedriver and a headless Chromium session, or `None` (with a
/// printed skip) when they are not installed outside CI.
pub async fn start() -> Option<Browser> {
    let Some(driver_path) = find("chromedriver") else {
        if std::env::var_os("CI").is_some() {
            panic!("chromedriver is required in CI: .ci/run installs chromium and chromium-driver");
        }
        eprintln!(
            "SKIP browser test: chromedriver not found (apt-get install chromium chromium-driver)"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(driver_path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().expect("profile dir").keep();
    let binary = find("chromium")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": binary,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let capabilities = match capabilities {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("start a Chromium session");
    Some(Browser { client, driver })
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Waits for an element to be present and returns it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Clicks an element, finding it again if a partial update replaced it
    /// between finding and clicking (htmx swaps search results).
    pub async fn click(&self, css: &str) {
        for attempt in 0.. {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(error) if attempt < 20 && replaced(&error) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("click {css}: {error}"),
            }
        }
    }

    /// Clicks a button that submits a form the browser posts (a page load,
    /// not a partial update), and waits for the next page to replace this
    /// one: a check that follows reads the answer, never the page it left
    /// (which may show the same text, or be replaced mid-read).
    pub async fn submit(&self, css: &str) {
        let page = self.find("html").await;
        self.click(css).await;
        for _ in 0..100 {
            match page.attr("lang").await {
                Err(error) if replaced(&error) => return,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("submitting with {css} never loaded a new page");
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Sets an input's value directly, for inputs such as `datetime-local`
    /// whose typed form depends on the browser's locale.
    pub async fn set_value(&self, css: &str, value: &str) {
        self.find(css).await;
        self.client
            .execute(
                "const el = document.querySelector(arguments[0]); el.value = arguments[1]; \
                 el.dispatchEvent(new Event('input', {bubbles: true})); \
                 el.dispatchEvent(new Event('change', {bubbles: true}));",
                vec![serde_json::json!(css), serde_json::json!(value)],
            )
            .await
            .unwrap_or_else(|e| panic!("set {css}: {e}"));
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Waits until the page's text contains `needle`.
    pub async fn wait_for_text(&self, needle: &str) {
        for _ in 0..100 {
            if self.page_text().await.contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "page never showed {needle:?}; it shows:\n{}",
            self.page_text().await
        );
    }

    pub async fn current_path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Saves a screenshot under the test target dir (`console-screenshots/`).
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Signs in through the login form.
    pub async fn sign_in(&self, base: &str, key: &str) {
        self.goto(&format!("{base}/login?next=/credit-systems"))
            .await;
        self.fill("#api_key", key).await;
        self.submit("form[action='/login'] button[type=submit]")
            .await;
        self.find("nav.sidebar").await;
    }
}

/// Whether WebDriver refused an element because the page replaced it since
/// it was found (Chromium says so in one of two ways).
fn replaced(error: &fantoccini::error::CmdError) -> bool {
    let text = error.to_string();
    text.contains("stale element") || text.contains("does not belong to the document")
}
